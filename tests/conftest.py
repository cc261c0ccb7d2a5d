"""Shared test configuration: GPU tests skip where there is no CUDA device; there, Triton
kernels run in Triton's interpreter (numpy on the CPU)."""

from __future__ import annotations

import os

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    # before anything imports Triton: its language functions take the interpreter at import
    if not _cuda_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _unfreeze_the_heap():
    """Workers and benches freeze the Python heap after warm-up (``renderer/worker/heap.py``);
    inside the test process that would freeze the other tests' objects too: undo it."""
    yield
    import gc

    if gc.get_freeze_count():
        gc.unfreeze()
