"""Constants the codec test modules share."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from exchange.codec import Codec, load_schemas

AVRO_DIR = Path(__file__).resolve().parents[2] / "avro"
NAMESPACE = "exchange.v1"
TS = 1_700_000_000_000
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
FUZZ = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])

# Values at every varint length boundary (zig-zag: 63 and -64 are the last one-byte values).
BOUNDARY_LONGS = sorted(
    {0, -1, 1, LONG_MIN, LONG_MAX, LONG_MIN + 1, LONG_MAX - 1}
    | {s * 2 ** (7 * k - 1) + d for k in range(1, 10) for s in (1, -1) for d in (-1, 0)}
)


def evolved_codec(directory: Path, name: str, change: Callable[[dict[str, Any]], None]) -> Codec:
    """A codec over a copy of the repo's schemas in which ``change`` edited ``name``."""
    shutil.copytree(AVRO_DIR, directory)
    path = directory / f"{NAMESPACE}.{name}.avsc"
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema))
    return Codec(load_schemas(directory))
