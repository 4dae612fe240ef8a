"""Fast construction of frozen slotted dataclasses: the one copy of the trick.

A frozen dataclass's ``__init__`` pays one ``object.__setattr__`` call per field (about
3.8 us for the 19-field ``OrderUpdated`` on the reference machine), which alone would cap
the engine far below its throughput target. Instead, allocate an instance of a *twin*: a
plain class with the identical ``__slots__`` layout, assign the slots directly, and relabel
the instance as the dataclass (CPython allows ``__class__`` assignment between
layout-identical classes): about 0.5 us. The result *is* an instance of the dataclass, equal
to one built the normal way (tests check every event type).

Used by the engine (:func:`positional_constructor` for its events) and by the codec's
compiled decoders (:func:`slot_twin`, filling the twin field by field).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, cast

from engine.errors import InvariantError

_E = TypeVar("_E")


def slot_twin(cls: type) -> type | None:
    """A plain class with ``cls``'s slot layout, or None when ``cls`` must use its __init__.

    None when ``cls`` has a ``__post_init__`` (validation the twin would skip), a base
    class, or slots that are not exactly its fields.
    """
    if hasattr(cls, "__post_init__"):
        return None
    slots = cls.__dict__.get("__slots__")
    if not isinstance(slots, tuple) or cls.__bases__ != (object,):
        return None
    if sorted(slots) != sorted(f.name for f in dataclasses.fields(cls)):
        return None
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": slots, "__module__": __name__})
    probe: Any = object.__new__(twin)
    try:
        probe.__class__ = cls
    except TypeError:  # layouts differ after all
        return None
    return twin


def positional_constructor(cls: type[_E], names: tuple[str, ...]) -> Callable[..., _E]:
    """A constructor for a frozen slotted dataclass that takes its fields positionally.

    ``names`` is the parameter order the call sites use; it must equal the dataclass's field
    order and its slots, or this raises InvariantError at import instead of mislabelling
    fields. The trailing run of fields that have a plain default may be left out by a call
    (``EngineOutput``'s newer event lists default to ``()``), so adding such a field at the end
    of an event does not change every call site.
    """
    declared = dataclasses.fields(cast(Any, cls))
    fields = tuple(f.name for f in declared)
    defaults: list[Any] = []
    for field in reversed(declared):
        if field.default is dataclasses.MISSING:
            break
        defaults.append(field.default)
    defaults.reverse()
    optional = len(names) - len(defaults)
    twin = slot_twin(cls)
    if fields != names or getattr(cls, "__slots__", None) != names or twin is None:
        raise InvariantError(
            f"{cls.__name__} fields are {fields}, the caller builds {names}: update the caller"
        )
    parameters = [
        name if k < optional else f"{name}=_default_{k - optional}" for k, name in enumerate(names)
    ]
    source = (
        f"def build_{cls.__name__}({', '.join(parameters)}):\n"
        "    obj = _allocate(_twin)\n"
        + "".join(f"    obj.{name} = {name}\n" for name in names)
        + "    obj.__class__ = _target\n"
        "    return obj\n"
    )
    namespace: dict[str, Any] = {"_allocate": object.__new__, "_twin": twin, "_target": cls}
    namespace.update({f"_default_{k}": value for k, value in enumerate(defaults)})
    exec(source, namespace)  # the same technique dataclasses itself uses to build __init__
    return cast(Callable[..., _E], namespace[f"build_{cls.__name__}"])
