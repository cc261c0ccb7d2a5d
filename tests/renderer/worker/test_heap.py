"""Freezing what warm-up made, and timing the garbage collections that remain."""

from __future__ import annotations

import gc
import time

from flamecast.renderer.worker import heap


class Node:
    def __init__(self) -> None:
        self.other = self  # a reference cycle: only the cyclic collector frees it


def tracked(obj) -> bool:
    """Whether the collector walks ``obj`` (frozen objects are left out of ``gc.get_objects``)."""
    return any(o is obj for o in gc.get_objects())


def test_freeze_leaves_what_is_alive_out_of_every_later_collection():
    before = Node()
    assert tracked(before)
    frozen = heap.freeze()
    assert frozen.objects == gc.get_freeze_count() > 0 and frozen.collect_ms >= 0
    assert not tracked(before)
    after = Node()
    assert tracked(after)  # made later: collected as usual


def test_cycles_made_after_freezing_are_still_collected():
    heap.freeze()
    Node()  # unreachable at once
    assert gc.collect() >= 1


def test_the_timer_counts_each_collection_while_started():
    timer = heap.CollectionTimer().start()
    try:
        gc.collect(0)
        gc.collect()
        gc.collect()
        gens = timer.generations
        assert gens[0].collections >= 1 and gens[2].collections >= 2
        summary = timer.summary()
        assert summary["gc_full_collections"] == gens[2].collections
        assert summary["gc_longest_ms"] >= 0 and summary["gc_total_ms"] >= summary["gc_longest_ms"] - 0.1
    finally:
        timer.stop()
    full = timer.generations[2].collections
    gc.collect()
    assert timer.generations[2].collections == full  # stopped: no longer counts
    timer.reset()
    assert timer.summary() == {"gc_full_collections": 0, "gc_longest_ms": 0.0, "gc_total_ms": 0.0}


def test_starting_twice_counts_once():
    timer = heap.CollectionTimer().start().start()
    try:
        gc.collect()
        assert timer.generations[2].collections == 1
    finally:
        timer.stop()
    assert timer._callback not in gc.callbacks


def test_the_timer_keeps_when_each_recent_full_collection_started_and_how_long_it_took():
    gc.freeze()  # what earlier tests left alive: keeps these collections short (unfrozen after each test)
    timer = heap.CollectionTimer().start()
    try:
        gc.collect()
        t0 = time.perf_counter()
        gc.collect(0)  # a young collection: counted, not kept
        gc.collect()
        gc.collect()
        t1 = time.perf_counter()
    finally:
        timer.stop()
    full = timer.full_since(t0)
    assert len(full) == 2  # the collection before t0 is left out
    assert all(0 <= at <= t1 - t0 and ms >= 0 for at, ms in full)
    assert full[0][0] <= full[1][0]
    assert len(timer.full_since(0.0)) == 3
    timer.reset()
    assert timer.full_since(0.0) == []


def test_the_timer_keeps_only_the_newest_full_collections(monkeypatch):
    monkeypatch.setattr(heap, "FULL_KEPT", 3)
    gc.freeze()
    timer = heap.CollectionTimer().start()
    between = []  # a clock reading after each collection
    try:
        for _ in range(5):
            gc.collect()
            between.append(time.perf_counter())
    finally:
        timer.stop()
    assert timer.generations[2].collections == 5  # every one counted
    assert len(timer.full_since(0.0)) == 3  # the newest three are kept
    assert len(timer.full_since(between[1])) == 3 and len(timer.full_since(between[2])) == 2
