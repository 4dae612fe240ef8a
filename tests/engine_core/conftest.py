"""Engine test configuration: hypothesis profiles and shared fixtures.

Profiles ``ci`` (fast: the whole engine suite stays well under a minute on 2 cores) and ``deep``
(many more, longer examples) are registered here; ``HYPOTHESIS_PROFILE`` picks one (default
``ci``). They are applied to the engine's property tests through
``engine_testkit.engine_settings()`` rather than ``settings.load_profile``, so that this
directory does not change hypothesis settings for the rest of the repository's tests.
"""

from __future__ import annotations

import pytest
from engine_testkit import Kit, make_markets, register_profiles

from engine import Engine, Markets

register_profiles()


@pytest.fixture
def markets() -> Markets:
    return make_markets()


@pytest.fixture
def engine(markets: Markets) -> Engine:
    return Engine(markets)


@pytest.fixture
def kit(engine: Engine) -> Kit:
    return Kit(engine)
