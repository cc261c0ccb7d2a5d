"""Compiled graphs kept on disk, and a count of what gets compiled or captured.

``use_compile_cache(root)`` points torch.compile's caches (Inductor's FX-graph and autotuning
caches, AOTAutograd's cache and Triton's kernels) at a folder under ``root`` named after what
the compiled code depends on beyond the graph itself: the torch, Triton, CUDA and diffusers
versions and the GPU model. Inductor keys each entry by the traced graph, its input shapes and
its settings, so a worker restarted on the same machine loads every kernel instead of
generating it; a new torch or GPU gets a folder of its own.

``CompileCounts`` reads how many graphs Dynamo has compiled and how many CUDA graphs the
CUDA-graph trees have recorded in this process; a service compares the counts after warm-up
with the counts after serving, and any difference is a recompilation or a re-recording.
``compile_phases()`` says where this process's compile time went, in torch's own accounting
(Dynamo's tracing, the backend, Inductor's code generation), so that a slow warm start can be
read as tracing or as kernels.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path


def default_compile_cache_root() -> Path:
    return Path(os.environ.get("FLAMECAST_COMPILE_CACHE") or Path.home() / ".cache" / "flamecast" / "compile")


def cache_key() -> str:
    """What compiled kernels depend on besides their graph: library versions and the GPU."""
    import diffusers
    import torch

    parts = [torch.__version__, str(torch.version.cuda), diffusers.__version__]
    try:
        import triton

        parts.append(triton.__version__)
    except ImportError:
        parts.append("no-triton")
    if torch.cuda.is_available():
        parts += [torch.cuda.get_device_name(), "sm%d%d" % torch.cuda.get_device_capability()]
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return f"torch-{torch.__version__.split('+')[0]}-{digest}"


def use_compile_cache(root: str | Path | None = None) -> Path:
    """Keep torch.compile's caches under ``root`` (default ``$FLAMECAST_COMPILE_CACHE`` or
    ``~/.cache/flamecast/compile``); returns the folder used. Call before compiling."""
    import torch

    folder = Path(root or default_compile_cache_root()) / cache_key()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")
    for config, name in ((torch._inductor.config, "fx_graph_cache"), (torch._inductor.config, "autotune_local_cache"),
                         (torch._functorch.config, "enable_autograd_cache")):
        if hasattr(config, name):  # on by default in recent torch; older ones lack some
            setattr(config, name, True)
    return folder


def _patch_cudagraph_recordings() -> None:
    """Count the CUDA-graph trees' recordings (once per process)."""
    from torch._inductor import cudagraph_trees as trees

    manager = trees.CUDAGraphTreeManager
    if not hasattr(manager, "record_function") or getattr(manager.record_function, "_flamecast_counted", False):
        return
    original = manager.record_function

    def record_function(self, *args, **kwargs):
        record_function.count += 1
        return original(self, *args, **kwargs)

    record_function.count = 0
    record_function._flamecast_counted = True
    manager.record_function = record_function


@dataclass(frozen=True)
class CompileCounts:
    """Graphs compiled by Dynamo, CUDA graphs recorded, FX-graph cache hits and misses."""

    graphs: int = 0
    cudagraph_recordings: int = 0
    fxgraph_cache_hits: int = 0
    fxgraph_cache_misses: int = 0

    @classmethod
    def now(cls) -> CompileCounts:
        from torch._dynamo.utils import counters

        _patch_cudagraph_recordings()
        from torch._inductor import cudagraph_trees as trees

        return cls(graphs=int(counters["stats"]["unique_graphs"]),
                   cudagraph_recordings=int(getattr(trees.CUDAGraphTreeManager.record_function, "count", 0)),
                   fxgraph_cache_hits=int(counters["inductor"]["fxgraph_cache_hit"]),
                   fxgraph_cache_misses=int(counters["inductor"]["fxgraph_cache_miss"]))

    def __sub__(self, other: CompileCounts) -> CompileCounts:
        return CompileCounts(*(a - b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def compile_phases() -> dict[str, float]:
    """Seconds this process spent per compile phase, as torch accounts them
    (``entire_frame_compile``: Dynamo in all, ``backend_compile``: AOTAutograd and Inductor
    within it, ``inductor_compile``, ``code_gen``, ...); empty where torch does not keep them."""
    from torch._dynamo import utils

    spent = getattr(utils, "calculate_time_spent", None)
    return {k: round(v, 3) for k, v in spent().items()} if spent else {}
