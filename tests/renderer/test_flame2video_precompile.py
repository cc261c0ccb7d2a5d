"""Calls compiled ahead of time: written by one process, loaded by the next without tracing.

The restart test compiles with Inductor (the backend a worker uses; on a CPU it builds C++
kernels) the ``tiny`` profile's steady UNet window and its decoder, in one process, and loads
them in a second one whose random weights differ: nothing is traced there, and in both
processes the compiled windows equal the same windows run eagerly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from flamecast.renderer.flame2video.precompile import PrecompiledCalls, module_signature, serializable_guards

CHILD = r"""
import json, sys, torch
from flamecast.renderer.flame2video.compile_cache import CompileCounts, use_compile_cache
from flamecast.renderer.flame2video.components import random_components
from flamecast.renderer.flame2video.config import get_profile, tiny_config
from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline
from flamecast.renderer.flame2video.stream import WindowStream

root, seed, device, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
folder = use_compile_cache(root)
pipe = FLAME2VideoPipeline(random_components(tiny_config(), seed=seed, device=device),
                           get_profile("tiny").replace(carry_mode="cache"), device=device)
pipe.compile(mode, precompiled=folder / "precompiled")

def frames():
    g = torch.Generator().manual_seed(7)
    ref = pipe.prepare_reference(torch.rand(3, 64, 64, generator=g))
    stream = WindowStream(pipe, ref, lambda items: torch.rand(len(items), 2, 3, 64, 64, generator=g), seed=3)
    return torch.stack([views for _ in range(3) for _, views in stream.push([0, 1])])  # one eager, two steady

before = CompileCounts.now()
compiled = frames()
counts = CompileCounts.now() - before
graphs, recordings = counts.graphs, counts.cudagraph_recordings
stats = pipe.precompiled_stats()
pipe._unet_calls = pipe._decoder_calls = None  # the same windows, eagerly
eager = frames()
print(json.dumps({"stats": stats, "graphs": graphs, "recordings": recordings, "frames": len(compiled),
                  "diff": (compiled.int() - eager.int()).abs().max().item()}))
"""


def _run(root, seed: int, device: str = "cpu", mode: str = "default") -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(seed), device, mode],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("device,mode", [
    ("cpu", "default"),
    pytest.param("cuda", "reduce-overhead", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA")]),
])
def test_a_restarted_process_loads_the_compiled_calls_and_traces_nothing(tmp_path, device, mode):
    """On CUDA with ``reduce-overhead`` the loaded calls run as CUDA graphs too (recorded once
    per process, as the compiled ones are)."""
    tolerance = 1 if device == "cpu" else 2  # uint8 frames: compiled kernels round differently from eager ones
    first = _run(tmp_path, 0, device, mode)
    assert first["frames"] == 6 and first["graphs"] >= 2, first  # the steady UNet window and the decoder, traced
    assert first["stats"]["unet"]["compiled"] == first["stats"]["unet"]["saved"] >= 1 and first["stats"]["unet"]["loaded"] == 0
    assert first["diff"] <= tolerance, first
    files = sorted(p.name for p in tmp_path.rglob("precompiled/*/*.pt"))
    assert len(files) == first["stats"]["unet"]["saved"] + first["stats"]["decoder"]["saved"]

    second = _run(tmp_path, 1, device, mode)  # other weights, same layout: the same files
    assert second["graphs"] == 0, second  # nothing traced
    assert second["recordings"] == first["recordings"] == (2 if mode == "reduce-overhead" else 0), (first, second)
    for name in ("unet", "decoder"):
        assert second["stats"][name]["compiled"] == 0 and second["stats"][name]["loaded"] == first["stats"][name]["compiled"]
    assert second["diff"] <= tolerance, second  # the loaded calls read this process's weights, not the first one's
    assert sorted(p.name for p in tmp_path.rglob("precompiled/*/*.pt")) == files


def _entry(guard_type: str, derived: tuple[str, ...] = (), is_global: bool = False):
    return SimpleNamespace(guard_type=guard_type, derived_guard_types=derived, is_global=is_global)


def test_guards_that_name_objects_by_identity_are_left_out():
    kept = serializable_guards([_entry("TENSOR_MATCH"), _entry("EQUALS_MATCH"), _entry("ID_MATCH"),
                                _entry("CONSTANT_MATCH", ("ID_MATCH",)), _entry("TYPE_MATCH", is_global=True),
                                _entry("CLOSURE_MATCH"), _entry("GLOBAL_STATE")])
    assert kept == [True, True, False, False, False, False, True]


def test_the_folder_key_follows_the_layout_not_the_weights():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    assert module_signature(a) == module_signature(b)  # other values
    assert module_signature(a) != module_signature(torch.nn.Linear(3, 5))
    assert module_signature(a) != module_signature(torch.nn.Linear(3, 4).double())


def test_each_call_shape_and_state_has_a_file_of_its_own(tmp_path):
    state = {"mode": "use"}
    calls = PrecompiledCalls(lambda m, x: m(x), tmp_path, state=lambda: state["mode"])
    x = torch.ones(2, 3)
    key = calls.key((x,))
    assert calls.key((torch.zeros(2, 3),)) == key  # values do not matter
    assert calls.key((torch.ones(4, 3),)) != key and calls.key((x.double(),)) != key and calls.key((x.t(),)) != key
    state["mode"] = "record"
    assert calls.key((x,)) != key
    assert calls.path(key).parent == tmp_path and key in calls.path(key).name


def test_a_call_that_cannot_be_saved_is_compiled_for_this_process_only(tmp_path):
    """A graph break leaves no whole graph to compile ahead of time: the call still runs
    compiled (in two graphs), and nothing is left on disk."""
    torch._dynamo.reset()
    module = torch.nn.Linear(3, 2)
    calls = PrecompiledCalls(_call, tmp_path, backend="eager")
    x = torch.randn(4, 3)
    for _ in range(2):
        torch.testing.assert_close(calls(module, x), module(x) * 2)
    assert calls.stats["in_process"] == 1 and calls.stats["compiled"] == calls.stats["saved"] == 0
    assert not list(tmp_path.iterdir())
    torch._dynamo.reset()


def _call(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = module(x)
    torch._dynamo.graph_break()
    return y * 2
