"""The compiled denoising UNet sees every static input at one address (tiny profile, CPU).

torch.compile treats tensors reached through a module (parameters, buffers, and attributes such
as the FLAME condition, the reference keys/values and the carried context) as static inputs,
and CUDA graphs are recorded again whenever one of them moves. A recording backend checks the
addresses over several windows of two sessions taking turns, without a GPU or a C++ compiler.
"""

from __future__ import annotations

import collections
import os

import pytest
import torch

from flamecast.renderer.flame2video.components import random_components
from flamecast.renderer.flame2video.config import get_profile, tiny_config
from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline
from flamecast.renderer.flame2video.stream import WindowStream


def address_recorder(seen: dict):
    def backend(gm: torch.fx.GraphModule, example_inputs):
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        static = [i for i, n in enumerate(placeholders)
                  if "_dynamo_static_input_type" in (n.meta.get("tensor_dict") or {})]
        assert static, "no static inputs: the check would see nothing"

        def run(*args):
            for i in static:
                if isinstance(args[i], torch.Tensor):
                    seen[(id(gm), placeholders[i].name)].add(args[i].data_ptr())
            return gm.forward(*args)

        return run

    return backend


@pytest.mark.parametrize("carry_mode", ["renoise", "cache"])
def test_static_inputs_keep_their_addresses(carry_mode):
    torch._dynamo.reset()
    seen: dict = collections.defaultdict(set)
    profile = get_profile("tiny").replace(carry_mode=carry_mode)
    pipe = FLAME2VideoPipeline(random_components(tiny_config(), seed=0), profile)
    pipe.unet.unet.compile(backend=address_recorder(seen), dynamic=False)
    g = torch.Generator().manual_seed(0)
    streams = [WindowStream(pipe, pipe.prepare_reference(torch.rand(3, 64, 64, generator=g)),
                            lambda items: torch.rand(len(items), 2, 3, 64, 64, generator=g), seed=i)
               for i in range(2)]
    for _ in range(3):
        for s in streams:
            assert len(s.push([0, 1])) == 2
    assert len(seen) > 100  # parameters, the condition, reference keys/values (and the context)
    moved = sorted(name for (_, name), ptrs in seen.items() if len(ptrs) > 1)
    assert moved == []
    torch._dynamo.reset()


def test_compile_counts_see_a_recompilation():
    from flamecast.renderer.flame2video.compile_cache import CompileCounts

    torch._dynamo.reset()
    fn = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    fn(torch.ones(2))
    warm = CompileCounts.now()
    fn(torch.ones(2))
    assert (CompileCounts.now() - warm).graphs == 0  # same shape: served by the compiled graph
    fn(torch.ones(3))
    assert (CompileCounts.now() - warm).graphs == 1  # a new shape after warm-up is a recompilation
    torch._dynamo.reset()


def test_compile_cache_folder_is_keyed_by_versions_and_device(tmp_path, monkeypatch):
    from flamecast.renderer.flame2video.compile_cache import cache_key, use_compile_cache

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # restored after the test
        monkeypatch.setenv(name, str(tmp_path / "before"))
    folder = use_compile_cache(tmp_path)
    assert folder.parent == tmp_path and folder.name == cache_key() and torch.__version__.split("+")[0] in folder.name
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(folder))
