"""Services tune the collector once their long-lived heap is built (entrypoints.bootstrap)."""

from __future__ import annotations

import gc

from entrypoints.bootstrap import tune_gc


def test_tune_gc_when_heap_is_built_freezes_it_and_collects_young_objects_less_often() -> None:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    heap = [[n] for n in range(10_000)]  # stands in for a book: long-lived, tracked objects
    try:
        tune_gc()
        assert gc.get_freeze_count() >= len(heap)
        young, *_ = gc.get_threshold()
        assert young > thresholds[0], "the young generation is collected less often"
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
