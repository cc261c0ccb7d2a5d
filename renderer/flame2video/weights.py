"""Where FLAME2Video's weights live, what is missing, and converters from the real formats.

Weights are never downloaded. The weights directory is, in order: an explicit path
(``--weights-dir``), ``$FLAMECAST_WEIGHTS``, ``~/.cache/flamecast/weights``. FLAME2Video's
components live under ``<weights>/flame2video/<component>/`` in flamecast's layout (see
``components.py``). ``import_*`` functions read the formats people have on disk and write that
layout:

* diffusers folders: an SD1.5 pipeline folder (``unet/``, ``vae/``, optionally
  ``image_encoder/``), or single-model folders (``config.json`` +
  ``diffusion_pytorch_model.safetensors``/``.bin``; ``model.safetensors`` for CLIP);
* AnimateDiff motion-module checkpoints (``mm_sd_v15_v2.ckpt``: keys such as
  ``down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight``),
  imported into the motion module and, as its initialisation, into the view module;
* AniPortrait checkpoints (``denoising_unet.pth``, ``reference_unet.pth``, ``pose_guider.pth``,
  ``motion_module.pth``).
"""

from __future__ import annotations

from flamecast.plugins import GeneratorUnavailable

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from .components import COMPONENTS, Components, build_component, component_dir, load_component, save_component
from .config import MODEL_CONFIGS, ModelConfig, Profile

ENV = "FLAMECAST_WEIGHTS"
DEFAULT_ROOT = Path("~/.cache/flamecast/weights")
SUBDIR = "flame2video"

# What each component is and which import fills it.
SOURCES: dict[str, tuple[str, str]] = {
    "reference_unet": ("SD1.5 UNet (or AniPortrait reference_unet.pth)", "flamecast weights import sd15 DIR | aniportrait DIR"),
    "denoising_unet": ("SD1.5 UNet (or AniPortrait denoising_unet.pth)", "flamecast weights import sd15 DIR | aniportrait DIR"),
    "motion_module": ("AnimateDiff mm_sd_v15_v2.ckpt (or AniPortrait motion_module.pth)", "flamecast weights import animatediff FILE | aniportrait DIR"),
    "view_module": ("view module (initialised from the AnimateDiff motion module)", "flamecast weights import animatediff FILE"),
    "flame_encoder": ("AniPortrait-style pose guider (pose_guider.pth)", "flamecast weights import aniportrait DIR"),
    "image_encoder": ("CLIP ViT-L/14 image encoder (sd-image-variations image_encoder/)", "flamecast weights import image-encoder DIR"),
    "vae": ("SD VAE (sd-vae-ft-mse)", "flamecast weights import vae DIR | sd15 DIR"),
    "tiny_vae": ("TAESD tiny decoder (madebyollin/taesd)", "flamecast weights import tiny-vae DIR"),
}


class MissingWeightsError(GeneratorUnavailable):
    """Components are missing; the message lists each file, where it goes and how to import it."""


def weights_root(explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The weights directory: ``explicit``, else $FLAMECAST_WEIGHTS, else ~/.cache/flamecast/weights."""
    env = os.environ if environ is None else environ
    raw = explicit or env.get(ENV) or DEFAULT_ROOT
    return Path(raw).expanduser()


def flame2video_root(root: Path) -> Path:
    return Path(root) / SUBDIR


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    path: Path
    present: bool
    what: str
    how: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "present": self.present, "what": self.what, "import": self.how}


def _weight_file(folder: Path) -> Path | None:
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return files[0] if files else None


def status(root: Path) -> list[ComponentStatus]:
    """One row per component: the folder it is expected in and whether it is there."""
    base = flame2video_root(root)
    rows = []
    for name in COMPONENTS:
        folder = component_dir(base, name)
        present = (folder / "config.json").is_file() and _weight_file(folder) is not None
        what, how = SOURCES[name]
        rows.append(ComponentStatus(name, folder, present, what, how))
    return rows


def required_components(profile: Profile) -> tuple[str, ...]:
    """Components a profile needs (the tiny decoder only when the profile decodes with it)."""
    return tuple(n for n in COMPONENTS if n != "tiny_vae" or profile.decoder == "tiny")


def check_present(root: Path, profile: Profile) -> None:
    """Raise MissingWeightsError listing every missing component of ``profile``."""
    need = set(required_components(profile))
    missing = [row for row in status(root) if row.name in need and not row.present]
    if not missing:
        return
    lines = [f"FLAME2Video weights are missing under {flame2video_root(root)}:"]
    for row in missing:
        lines.append(f"  - {row.name}: {row.what}; expected {row.path}/config.json + *.safetensors; get it with: {row.how}")
    lines.append(f"Set the weights directory with --weights-dir or ${ENV}; weights are never downloaded. "
                 "See docs/weights.md. For benchmarks only, --allow-random-weights runs with random weights.")
    raise MissingWeightsError("\n".join(lines))


def load_components(root: Path, profile: Profile) -> Components:
    """Load every component ``profile`` needs from flamecast's layout (raises MissingWeightsError)."""
    check_present(root, profile)
    base = flame2video_root(root)
    need = required_components(profile)
    return Components(**{n: load_component(base, n) if n in need else None for n in COMPONENTS})


# ---- reading foreign formats ------------------------------------------------------------

def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: .safetensors, or .ckpt/.pth/.bin loaded with weights_only (no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path} is not a plain tensor checkpoint ({exc.__class__.__name__}: {exc})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def convert_animatediff_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AnimateDiff's original motion-module keys -> diffusers' MotionAdapter keys.

    ``temporal_transformer.`` is dropped, ``attention_blocks.0/1`` become ``attn1/attn2``,
    ``norms.0/1`` ``norm1/norm2``, ``ff_norm`` ``norm3``; the sinusoidal ``pos_encoder.pe``
    buffers are recomputed by diffusers and skipped (the same mapping as diffusers'
    ``scripts/convert_animatediff_motion_module_to_diffusers.py``).
    """
    out = {}
    for k, v in sd.items():
        if "pos_encoder" in k:
            continue
        out[k.replace(".norms.0", ".norm1").replace(".norms.1", ".norm2").replace(".ff_norm", ".norm3")
            .replace(".attention_blocks.0", ".attn1").replace(".attention_blocks.1", ".attn2")
            .replace(".temporal_transformer", "")] = v
    return out


def motion_config_from_keys(sd: Mapping[str, torch.Tensor], base: Mapping[str, Any]) -> dict[str, Any]:
    """MotionAdapter config: block widths, layers per block, mid block and sequence length read
    off the (original AnimateDiff) keys; heads and norm groups taken from ``base``."""
    widths: dict[int, int] = {}
    layers: dict[int, set[int]] = {}
    seq_len = base.get("motion_max_seq_length", 32)
    for k, v in sd.items():
        m = re.match(r"down_blocks\.(\d+)\.motion_modules\.(\d+)\.", k)
        if m:
            layers.setdefault(int(m[1]), set()).add(int(m[2]))
            if k.endswith("proj_in.weight"):
                widths[int(m[1])] = v.shape[1]
        if k.endswith("pos_encoder.pe"):
            seq_len = v.shape[1]
    if not widths:
        raise ValueError("no down_blocks.N.motion_modules.M.* keys: not an AnimateDiff motion-module checkpoint")
    n = max(widths) + 1
    per_block = sorted({len(layers[i]) for i in range(n)})
    if len(per_block) != 1:
        raise ValueError(f"motion modules per block differ ({per_block}); not an SD1.5-style layout")
    return {**base, "block_out_channels": [widths[i] for i in range(n)], "motion_layers_per_block": per_block[0],
            "use_motion_mid_block": any(k.startswith("mid_block.") for k in sd), "motion_max_seq_length": seq_len}


def flame_encoder_config_from_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """FlameEncoder config from an AniPortrait pose guider's ``conv_layers``/``final_proj`` weights."""
    convs = sorted((int(m[1]), v) for k, v in sd.items() if (m := re.fullmatch(r"conv_layers\.(\d+)\.weight", k)) and v.ndim == 4)
    if not convs or "final_proj.weight" not in sd:
        raise ValueError("no conv_layers.N.weight / final_proj.weight keys: not an AniPortrait pose guider")
    channels = [convs[0][1].shape[1]] + [w.shape[0] for _, w in convs[1::2]]
    return {"out_channels": sd["final_proj.weight"].shape[0], "channels": channels}


@dataclass
class LoadReport:
    component: str
    source: str
    loaded: int
    missing: list[str]
    unused: list[str]

    def summary(self) -> str:
        text = f"{self.component}: {self.loaded} tensors from {self.source}"
        if self.missing:
            text += f"; {len(self.missing)} left at initial values (e.g. {self.missing[0]})"
        if self.unused:
            text += f"; {len(self.unused)} unused (e.g. {self.unused[0]})"
        return text


def load_into(module: torch.nn.Module, sd: Mapping[str, torch.Tensor], component: str, source: str,
              *, ignore_unused: Callable[[str], bool] = lambda k: False) -> LoadReport:
    """Load ``sd`` into ``module`` by name, checking shapes; report what matched."""
    own = module.state_dict()
    bad = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad:
        k = bad[0]
        raise ValueError(f"{source}: {k} has shape {tuple(sd[k].shape)}, {component} expects {tuple(own[k].shape)}; "
                         "the checkpoint does not match this model's configuration")
    result = module.load_state_dict(dict(sd), strict=False)
    unused = [k for k in result.unexpected_keys if not ignore_unused(k)]
    if len(result.missing_keys) == len(own):
        raise ValueError(f"{source}: no tensor matches {component}'s parameter names")
    return LoadReport(component, source, len(own) - len(result.missing_keys), list(result.missing_keys), unused)


# ---- importers: each writes flamecast's layout under <root>/flame2video -----------------

def _from_folder(cls: type, folder: Path, subfolder: str | None = None) -> torch.nn.Module:
    path = folder / subfolder if subfolder else folder
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}/config.json not found: expected a diffusers/transformers model folder")
    return cls.from_pretrained(str(path)).eval()


def import_sd15(root: Path, folder: Path) -> list[str]:
    """A diffusers SD1.5 folder (``unet/``, ``vae/``, optional ``image_encoder/``) or a bare UNet folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = Path(folder)
    base = flame2video_root(root)
    unet_dir = "unet" if (folder / "unet").is_dir() else None
    unet = _from_folder(UNet2DConditionModel, folder, unet_dir)
    save_component(unet, base, "reference_unet")
    save_component(unet, base, "denoising_unet")
    done = ["reference_unet", "denoising_unet"]
    if (folder / "vae").is_dir():
        save_component(_from_folder(AutoencoderKL, folder, "vae"), base, "vae")
        done.append("vae")
    if (folder / "image_encoder").is_dir():
        done += import_image_encoder(root, folder / "image_encoder")
    return done


def import_vae(root: Path, folder: Path) -> list[str]:
    from diffusers import AutoencoderKL

    save_component(_from_folder(AutoencoderKL, Path(folder)), flame2video_root(root), "vae")
    return ["vae"]


def import_tiny_vae(root: Path, folder: Path) -> list[str]:
    from diffusers import AutoencoderTiny

    save_component(_from_folder(AutoencoderTiny, Path(folder)), flame2video_root(root), "tiny_vae")
    return ["tiny_vae"]


def import_image_encoder(root: Path, folder: Path) -> list[str]:
    from transformers import CLIPVisionModelWithProjection

    save_component(_from_folder(CLIPVisionModelWithProjection, Path(folder)), flame2video_root(root), "image_encoder")
    return ["image_encoder"]


def _base_config(model: str) -> ModelConfig:
    if model not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[model]()


def motion_adapter_from_checkpoint(path: Path, model: str = "sd15") -> tuple[torch.nn.Module, LoadReport]:
    """Read an AnimateDiff-layout motion-module checkpoint into a diffusers MotionAdapter."""
    from diffusers import MotionAdapter

    sd = read_state_dict(path)
    cfg = motion_config_from_keys(sd, _base_config(model).motion)
    adapter = MotionAdapter(**cfg).eval()
    report = load_into(adapter, convert_animatediff_keys(sd), "motion_module", str(path))
    if report.missing:
        raise ValueError(f"{path}: {len(report.missing)} motion-module tensors missing (e.g. {report.missing[0]})")
    return adapter, report


def import_animatediff(root: Path, path: Path, *, model: str = "sd15", view: bool = True) -> list[str]:
    """An AnimateDiff motion module -> motion_module and (initialisation) view_module."""
    adapter, _ = motion_adapter_from_checkpoint(Path(path), model)
    base = flame2video_root(root)
    save_component(adapter, base, "motion_module")
    if view:
        save_component(adapter, base, "view_module")
    return ["motion_module", "view_module"] if view else ["motion_module"]


def _unet_from_state_dict(sd: Mapping[str, torch.Tensor], model: str, root: Path, name: str, source: str) -> LoadReport:
    """A UNet state dict with diffusers names -> UNet2DConditionModel (config of an imported UNet if any)."""
    from diffusers import UNet2DConditionModel

    base = flame2video_root(root)
    existing = next((component_dir(base, n) for n in ("denoising_unet", "reference_unet")
                     if (component_dir(base, n) / "config.json").is_file()), None)
    if existing is not None:
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(existing)))
    else:
        unet = build_component(name, _base_config(model))
    report = load_into(unet, sd, name, source, ignore_unused=lambda k: ".motion_modules." in k)
    if report.missing:
        raise ValueError(f"{source}: {len(report.missing)} UNet tensors missing (e.g. {report.missing[0]})")
    save_component(unet.eval(), base, name)
    return report


def import_aniportrait(root: Path, folder: Path, *, model: str = "sd15") -> list[str]:
    """AniPortrait's checkpoints in ``folder``: denoising_unet.pth, reference_unet.pth,
    pose_guider.pth, motion_module.pth (each optional; at least one)."""
    from .flame_encoder import FlameEncoder

    folder = Path(folder)
    base = flame2video_root(root)
    done: list[str] = []
    for fname, name in (("denoising_unet.pth", "denoising_unet"), ("reference_unet.pth", "reference_unet")):
        if (folder / fname).is_file():
            _unet_from_state_dict(read_state_dict(folder / fname), model, root, name, str(folder / fname))
            done.append(name)
    if (folder / "pose_guider.pth").is_file():
        sd = read_state_dict(folder / "pose_guider.pth")
        enc = FlameEncoder(**flame_encoder_config_from_keys(sd))
        load_into(enc, sd, "flame_encoder", str(folder / "pose_guider.pth"),
                  ignore_unused=lambda k: k.startswith(("conv_layers_", "cross_attn")))
        save_component(enc.eval(), base, "flame_encoder")
        done.append("flame_encoder")
    if (folder / "motion_module.pth").is_file():
        adapter, _ = motion_adapter_from_checkpoint(folder / "motion_module.pth", model)
        save_component(adapter, base, "motion_module")
        done.append("motion_module")
        if not (component_dir(base, "view_module") / "config.json").is_file():
            save_component(adapter, base, "view_module")
            done.append("view_module")
    if not done:
        raise FileNotFoundError(f"{folder} holds none of denoising_unet.pth, reference_unet.pth, pose_guider.pth, motion_module.pth")
    return done


def import_flamecast(root: Path, folder: Path, names: Iterable[str] = COMPONENTS) -> list[str]:
    """Copy components already in flamecast's layout (e.g. an export from another machine)."""
    import shutil

    done = []
    for name in names:
        src = component_dir(Path(folder), name)
        if (src / "config.json").is_file() and _weight_file(src) is not None:
            dst = component_dir(flame2video_root(root), name)
            shutil.copytree(src, dst, dirs_exist_ok=True)
            done.append(name)
    if not done:
        raise FileNotFoundError(f"{folder} holds no component folder ({', '.join(COMPONENTS)}) with config.json + *.safetensors")
    return done


IMPORTERS: dict[str, Callable[..., list[str]]] = {
    "sd15": import_sd15,
    "animatediff": import_animatediff,
    "aniportrait": import_aniportrait,
    "image-encoder": import_image_encoder,
    "vae": import_vae,
    "tiny-vae": import_tiny_vae,
    "flamecast": import_flamecast,
}
