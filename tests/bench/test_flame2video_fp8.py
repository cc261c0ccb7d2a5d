"""``bench/flame2video_fp8.py`` on a CPU: which layers it would quantize, that it refuses float8
where there is no GPU for it, and that an uncompiled bf16 pass of the tiny profile writes its
report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.bench.helpers import load_bench


@pytest.fixture(scope="module")
def fp8():
    return load_bench("flame2video_fp8")


@pytest.mark.parametrize(("module", "name", "chosen"), [
    (torch.nn.Linear(320, 960), "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_qkv", True),
    (torch.nn.Linear(1280, 320), "up_blocks.3.attentions.0.transformer_blocks.0.ff.net.2", True),
    (torch.nn.Linear(320, 1280), "time_embedding.linear_1", False),
    (torch.nn.Linear(768, 320), "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", False),
    (torch.nn.Linear(40, 320), "down_blocks.0.attentions.0.proj_in", False),
    (torch.nn.Conv2d(320, 320, 3), "down_blocks.0.resnets.0.conv1", False),
])
def test_only_large_linear_layers_outside_the_time_embedding_and_cross_attention(fp8, module, name, chosen):
    assert fp8.fp8_filter(module, name) is chosen


def test_unknown_variant_is_refused(fp8, capsys):
    with pytest.raises(SystemExit):
        fp8.parse_args(["--variants", "bf16,int4"])
    assert "choose from bf16, fp8" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_fp8_without_a_gpu_says_what_to_do(fp8, capsys):
    assert fp8.main(["--profile", "tiny", "--device", "cpu"]) == 2
    assert "compute capability 8.9" in capsys.readouterr().err


def test_frame_distance(fp8):
    a = [[[np.zeros((2, 4, 4, 3), np.uint8)]]]
    b = [[[np.full((2, 4, 4, 3), 10, np.uint8)]]]
    assert fp8.frame_distance(a, a) == {"psnr_db": math.inf, "mad": 0.0}
    far = fp8.frame_distance(a, b)
    assert far["mad"] == 10.0 and far["psnr_db"] == pytest.approx(10 * math.log10(255 ** 2 / 100))


def test_tiny_bf16_pass_writes_its_report(fp8, tmp_path):
    out = tmp_path / "fp8.json"
    code = fp8.main(["--profile", "tiny", "--device", "cpu", "--compile", "", "--variants", "bf16", "--batch", "2",
                     "--windows", "2", "--compare-windows", "1", "--trace", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0 and report["batch"] == 2
    bf16 = report["variants"]["bf16"]
    assert bf16["window_ms"] > 0 and bf16["fps_per_session"] > 0
    assert {"unet", "decode", "window"} <= set(bf16["stage_ms_per_window"])
    assert bf16["trace"]["kernel_ms_per_window"] == 0  # no GPU kernels on a CPU


@pytest.mark.parametrize(("name", "kind"), [
    ("nvjet_sm90_tst_168x128_64x5_1x2_h_bz_coopA_bias_TNN", "matrix product"),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "convolution"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x64", "attention"),
    ("triton_poi_fused_convolution_silu_104", "inductor"),
    ("triton_poi_fused__scaled_dot_product_cudnn_attention__unsafe_view_cat", "inductor"),
    ("Memcpy DtoD (Device -> Device)", "copy"),
    ("void at::native::elementwise_kernel<128, 2>", "other"),
])
def test_kernel_kinds_by_name(fp8, name, kind):
    assert fp8.kernel_kind(name) == kind


def test_layers_counts_every_linear_call_of_a_steady_window(fp8):
    from flamecast.renderer.flame2video.config import PROFILES

    tiny = PROFILES["tiny"]
    args = fp8.parse_args(["--layers", "--profile", "tiny", "--device", "cpu", "--batch", "2", "--reps", "1"])
    report = fp8.layers_report(args)
    shapes = report["shapes"]
    # each layer the UNet uses runs once per denoising step; the unfused Q, K and V stay unused
    assert report["calls_per_window"] == tiny.steps * report["linears_called"] == sum(r["calls"] for r in shapes)
    assert 0 < report["linears_called"] < report["linears"]
    frames = tiny.window if tiny.carry_mode == "renoise" else tiny.stride
    assert max(r["rows"] for r in shapes) == 2 * frames * tiny.views * (tiny.size // 8) ** 2
    assert any(r["out"] == 3 * r["in"] and not r["bias"] for r in shapes)  # the fused QKV projection
    assert all(r["fp8_relative_error"] < 0.1 for r in shapes)
    assert report["per_window"]["bf16_ms"] == pytest.approx(sum(r["bf16_ms"] * r["calls"] for r in shapes), abs=0.01)


def test_rowwise_fp8_keeps_each_rows_scale(fp8):
    x = torch.tensor([[1.0, -2.0, 0.5], [1000.0, 10.0, -250.0]])
    q, scale = fp8.rowwise_fp8(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (2, 1)
    assert q.float().abs().amax(dim=1).tolist() == [448.0, 448.0]
    assert torch.allclose(q.float() * scale, x, rtol=0.07)
