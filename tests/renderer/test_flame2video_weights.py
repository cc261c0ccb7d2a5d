"""FLAME2Video weights: tiny checkpoints written in each real layout (diffusers folders,
AnimateDiff motion modules, AniPortrait .pth files, CLIP, TAESD), imported into flamecast's
layout, loaded back; status and the missing-weights message."""

from __future__ import annotations

import re

import pytest
import torch

from flamecast.renderer.flame2video import weights as W
from flamecast.renderer.flame2video.components import COMPONENTS, build_component
from flamecast.renderer.flame2video.config import get_profile, tiny_config

CFG = tiny_config()
TINY = get_profile("tiny")


def to_animatediff_keys(sd: dict[str, torch.Tensor], seq_len: int = 32) -> dict[str, torch.Tensor]:
    """diffusers MotionAdapter keys -> the original AnimateDiff (mm_sd_v15_v2.ckpt) layout."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", k)
        k = (k.replace(".attn1.", ".attention_blocks.0.").replace(".attn2.", ".attention_blocks.1.")
             .replace(".norm1.", ".norms.0.").replace(".norm2.", ".norms.1.").replace(".norm3.", ".ff_norm."))
        out[k] = v
        m = re.match(r"(.*\.attention_blocks\.\d)\.to_q\.weight$", k)
        if m:  # AnimateDiff stores its sinusoidal table as a buffer
            out[m[1] + ".pos_encoder.pe"] = torch.zeros(1, seq_len, v.shape[1])
    return out


@pytest.fixture(scope="module")
def originals():
    torch.manual_seed(0)
    return {name: build_component(name, CFG).eval() for name in COMPONENTS}


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_weights_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv(W.ENV, str(tmp_path / "env"))
    assert W.weights_root(tmp_path / "x") == tmp_path / "x"
    assert W.weights_root() == tmp_path / "env"
    monkeypatch.delenv(W.ENV)
    assert str(W.weights_root()).endswith(".cache/flamecast/weights")


def test_missing_weights_message_names_every_file_and_the_way_in(tmp_path):
    rows = W.status(tmp_path)
    assert [r.name for r in rows] == list(COMPONENTS) and not any(r.present for r in rows)
    with pytest.raises(W.MissingWeightsError) as err:
        W.check_present(tmp_path, TINY)
    text = str(err.value)
    for name in COMPONENTS:
        assert f"{name}:" in text and str(tmp_path / "flame2video" / name) in text
    assert "flamecast weights import animatediff" in text and "--allow-random-weights" in text
    # a profile decoding with the full VAE does not need the tiny decoder
    with pytest.raises(W.MissingWeightsError) as err:
        W.check_present(tmp_path, TINY.replace(decoder="vae"))
    assert "tiny_vae" not in str(err.value)


def test_import_every_real_layout_then_load(tmp_path, originals):
    src, root = tmp_path / "src", tmp_path / "weights"
    # a diffusers SD1.5 pipeline folder with an image encoder (as sd-image-variations ships)
    originals["reference_unet"].save_pretrained(src / "sd15" / "unet")
    originals["vae"].save_pretrained(src / "sd15" / "vae")
    originals["image_encoder"].save_pretrained(src / "sd15" / "image_encoder")
    assert W.import_sd15(root, src / "sd15") == ["reference_unet", "denoising_unet", "vae", "image_encoder"]
    # TAESD folder
    originals["tiny_vae"].save_pretrained(src / "taesd")
    assert W.import_tiny_vae(root, src / "taesd") == ["tiny_vae"]
    # AnimateDiff motion module checkpoint, original key layout
    ckpt = to_animatediff_keys(originals["motion_module"].state_dict())
    assert "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight" in ckpt
    torch.save({"state_dict": ckpt}, src / "mm_sd_v15_v2.ckpt")
    assert W.import_animatediff(root, src / "mm_sd_v15_v2.ckpt", model="tiny") == ["motion_module", "view_module"]
    # AniPortrait's pose guider (with its unused multi-scale branch) and a fine-tuned denoising UNet
    pg = dict(originals["flame_encoder"].state_dict())
    pg["conv_layers_1.0.weight"] = torch.zeros(1)
    pg["cross_attn1.proj_in.weight"] = torch.zeros(1)
    (src / "ani").mkdir()
    torch.save(pg, src / "ani" / "pose_guider.pth")
    dn = {k: v + 1 for k, v in originals["denoising_unet"].state_dict().items()}
    dn["down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"] = torch.zeros(1)  # ignored
    torch.save(dn, src / "ani" / "denoising_unet.pth")
    assert W.import_aniportrait(root, src / "ani", model="tiny") == ["denoising_unet", "flame_encoder"]

    assert all(r.present for r in W.status(root))
    loaded = W.load_components(root, TINY)
    assert same(loaded.reference_unet, originals["reference_unet"])
    assert same(loaded.vae, originals["vae"]) and same(loaded.tiny_vae, originals["tiny_vae"])
    assert same(loaded.image_encoder, originals["image_encoder"])
    assert same(loaded.motion_module, originals["motion_module"])
    assert same(loaded.view_module, originals["motion_module"])  # view module initialised from it
    assert same(loaded.flame_encoder, originals["flame_encoder"])
    key = "conv_in.weight"
    assert torch.equal(loaded.denoising_unet.state_dict()[key], originals["denoising_unet"].state_dict()[key] + 1)
    # flamecast's own layout: config.json + safetensors per component
    folder = root / "flame2video" / "motion_module"
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))


def test_flamecast_export_copies(tmp_path, originals):
    from flamecast.renderer.flame2video.components import save_component

    save_component(originals["flame_encoder"], tmp_path / "export", "flame_encoder")
    assert W.import_flamecast(tmp_path / "w", tmp_path / "export") == ["flame_encoder"]
    with pytest.raises(FileNotFoundError, match="holds no component"):
        W.import_flamecast(tmp_path / "w", tmp_path / "nothing")


def test_animatediff_config_is_read_from_the_keys(originals):
    ckpt = to_animatediff_keys(originals["motion_module"].state_dict(), seq_len=24)
    cfg = W.motion_config_from_keys(ckpt, CFG.motion)
    assert cfg["block_out_channels"] == [32, 64] and cfg["motion_layers_per_block"] == 1
    assert cfg["use_motion_mid_block"] and cfg["motion_max_seq_length"] == 24


def test_wrong_checkpoints_are_refused_with_a_reason(tmp_path, originals):
    torch.save({"something.else": torch.zeros(2)}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="not an AnimateDiff"):
        W.import_animatediff(tmp_path / "w", tmp_path / "x.ckpt", model="tiny")
    ckpt = to_animatediff_keys(originals["motion_module"].state_dict())
    name = next(k for k in ckpt if k.endswith("attention_blocks.0.to_q.weight"))
    ckpt[name] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="has shape"):
        W.import_animatediff(tmp_path / "w", tmp_path / "bad.ckpt", model="tiny")
    torch.save({"obj": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # a pickled module, not tensors
    with pytest.raises(ValueError, match="not a plain tensor checkpoint"):
        W.read_state_dict(tmp_path / "pickled.pth")
    with pytest.raises(FileNotFoundError, match="holds none of"):
        W.import_aniportrait(tmp_path / "w", tmp_path)
