"""``bench/short_attention.py``: the attention shapes it times are the UNet's, counted on the
tiny model; its sums and its errors."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from diffusers.models.attention_processor import Attention

from flamecast.renderer.flame2video.components import build_component
from flamecast.renderer.flame2video.config import PROFILES, tiny_config
from flamecast.renderer.flame2video.unet import MultiViewUNet
from tests.bench.helpers import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("short_attention")


@torch.no_grad()
def test_shapes_are_the_motion_and_view_attentions_of_a_unet_call(bench):
    """One call of the tiny UNet on S frames of V views: every attention in the motion and view
    modules, by (rows, channels), equals the bench's list, counts included."""
    profile, cfg, batch = PROFILES["tiny"], tiny_config(), 3
    torch.manual_seed(0)
    parts = [build_component(n, cfg) for n in ("denoising_unet", "motion_module", "view_module")]
    unet = MultiViewUNet.build(*parts).eval()
    seen: Counter = Counter()

    def record(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        seen[(x.shape[0], x.shape[1], x.shape[2])] += 1

    for root in (unet.unet, unet.view_module):
        for name, mod in root.named_modules():
            if isinstance(mod, Attention) and "motion_modules" in name:
                mod.register_forward_pre_hook(record, with_kwargs=True)
    latent = profile.size // 8
    sample = torch.randn(batch, profile.views, 4, profile.stride, latent, latent)
    unet(sample, torch.tensor([10]), torch.randn(batch, 1, cfg.unet["cross_attention_dim"]))

    expected: Counter = Counter()
    for s in bench.attention_shapes(profile, cfg, batch):
        # without the carry, the motion modules attend over the S new frames alone
        length = s["lq"]
        expected[(s["rows"], length, s["channels"])] += s["count"]
    assert seen == expected


def test_live_at_four_sessions(bench):
    from flamecast.renderer.flame2video.config import sd15_config

    shapes = bench.attention_shapes(PROFILES["live"], sd15_config(), 4)
    top = [s for s in shapes if s["level"] == 0]
    assert {(s["axis"], s["rows"], s["lq"], s["lk"], s["channels"]) for s in top} == {
        ("frames", 4 * 4 * 32 * 32, 4, 8, 320), ("views", 4 * 4 * 32 * 32, 4, 4, 320)}
    assert sum(s["count"] for s in shapes) == 2 * 2 * (5 + 5 + 5 + 6)


def test_window_sums_and_bytes(bench):
    rows = [{"count": 10, "a": {"ms": 0.5}}, {"count": 12, "a": {"ms": 0.25}}]
    assert bench.summary(rows, ["a"], steps=4) == {"a": pytest.approx(4 * (5.0 + 3.0))}
    shape = {"rows": 100, "channels": 8, "lq": 4, "lk": 8}
    assert bench.moved_bytes(shape, 2) == 2 * 100 * 8 * (4 + 8 + 8 + 4)


def test_reference_and_split_take_the_last_tokens_as_queries(bench):
    torch.manual_seed(0)
    qkv = torch.randn(5, 6, 3 * 16)
    q, k, v = bench.split(qkv, 2)
    assert q.shape == (5, 2, 16) and k.shape == v.shape == (5, 6, 16)
    torch.testing.assert_close(q, qkv[:, 4:, :16])
    ref = bench.reference(qkv, 2, 4)
    assert ref.shape == (5, 2, 16) and ref.dtype == torch.float64


def test_arguments_are_checked(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--variants", "nope"])
    assert "choose from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--batch", "0"])
    if not torch.cuda.is_available():
        assert bench.main(["--profile", "live"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
