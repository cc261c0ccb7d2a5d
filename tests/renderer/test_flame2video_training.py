"""FLAME2Video training on the tiny config: data checks, every phase trains (its probe loss
falls), a resumed run equals an uninterrupted one, and the export serves a session."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate")

from flamecast.plugins import CommandError, FlameFrame, GeneratorSessionSpec  # noqa: E402
from flamecast.renderer.flame2video.training import synthetic  # noqa: E402
from flamecast.renderer.flame2video.training.checks import check_dataset  # noqa: E402
from flamecast.renderer.flame2video.training.layout import DatasetError, read_flame, write_flame, write_video  # noqa: E402
from flamecast.renderer.flame2video.training.trainer import TrainSettings, TrainingError, make_optimizer, oom_message, train  # noqa: E402
from flamecast.renderer.flame2video.training.validate import ValidationSettings  # noqa: E402

SIZE = 64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def photo_avatar() -> synthetic.Avatar:
    """The astronaut photograph as a UV texture of the built-in head (no FaceMesh fit: fast)."""
    import skimage.data
    from PIL import Image

    from flamecast.renderer.head import load_head

    head = load_head("builtin")
    tex = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((128, 128)))
    faces = head.faces.shape[0]
    return synthetic.Avatar("astronaut", tex, np.zeros(faces, bool), np.full((faces, 3), 0.5, np.float32),
                            np.zeros(head.n_shape, np.float32))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    s = synthetic.SyntheticSettings(out=out, clips=2, frames=6, views=2, size=SIZE, val_every=2)
    synthetic.make_synthetic(s, [photo_avatar()], progress=False)
    return out


def settings(data: Path, out: Path, phase: str, steps: int = 4, **kw) -> TrainSettings:
    val = ValidationSettings(clips=1, frames=4, views=2, window=4, stride=2, steps=1)
    base = dict(data=data, out=out, phase=phase, model="tiny", steps=steps, batch=2, window=4, views=2, workers=0,
                checkpoint_every=0, val_every=0, validation=val, progress=False, warmup=1, lr=1e-3, cpu=True)
    return TrainSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> tuple[Path, dict]:
    """Every phase in order on one run folder; the autoencoder and phase 3 also sample validation videos."""
    out = tmp_path_factory.mktemp("run")
    summaries = {}
    for phase in ("vae", "1", "2", "3", "distill"):
        kw = {"random_init": phase == "vae", "lr": 1e-4 if phase == "distill" else 1e-3}
        if phase in ("vae", "3"):
            kw["val_every"] = 4
        summaries[phase] = train(settings(dataset, out, phase, **kw))
    return out, summaries


def test_synthetic_dataset_is_checked_and_aligned(dataset):
    manifest = check_dataset(dataset)
    assert [c.split for c in manifest.clips] == ["train", "val"]
    clip = manifest.clips[0]
    assert clip.view_ids == ("front", "left30") and clip.frames == 6
    seq = read_flame(dataset / clip.flame)
    assert seq.pose.shape == (6, 15) and seq.translation.shape == (6, 3)


def test_bad_clips_are_refused_with_clip_and_reason(dataset, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    (bad / "c0000" / "left30.mp4").unlink()  # missing view
    seq = read_flame(bad / "c0001" / "flame.npz")
    seq.expression[3, 2] = np.nan
    write_flame(bad / "c0001" / "flame.npz", seq)  # NaN FLAME
    write_video(bad / "c0001" / "front.mp4", np.zeros((4, SIZE, SIZE, 3), np.uint8))  # 4 frames, not 6
    (bad / "c0001" / "left30.mp4").write_bytes(b"not a video")  # unreadable
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError) as err:
        check_dataset(bad)
    text = str(err.value)
    assert "clip c0000: view left30: video" in text and "is missing" in text
    assert "clip c0001: FLAME expression holds NaN/inf values (first at frame 3)" in text
    assert "clip c0001: view front: video" in text and "has 4 frames, the manifest says 6" in text
    assert "clip c0001: view left30: video" in text and "unreadable" in text


def test_checks_decode_a_video_again_once_it_changed(dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    check_dataset(data)
    path = data / ".cache" / "videos.json"
    facts = json.loads(path.read_text())
    assert sorted(facts) == ["c0000/front.mp4", "c0000/left30.mp4", "c0001/front.mp4", "c0001/left30.mp4"]
    assert facts["c0000/front.mp4"]["shape"] == [6, SIZE, SIZE]
    facts["c0000/left30.mp4"]["shape"] = [5, SIZE, SIZE]  # what is remembered for an unchanged file is believed
    path.write_text(json.dumps(facts))
    with pytest.raises(DatasetError, match="clip c0000: view left30: video .* has 5 frames, the manifest says 6"):
        check_dataset(data)
    write_video(data / "c0000" / "front.mp4", np.zeros((4, SIZE, SIZE, 3), np.uint8))  # changed: decoded again
    shutil.copy(dataset / "c0000" / "left30.mp4", data / "c0000" / "left30.mp4")  # rewritten: decoded again
    with pytest.raises(DatasetError) as err:
        check_dataset(data)
    assert str(err.value).splitlines()[1:] == [f"  - clip c0000: view front: video {data}/c0000/front.mp4 has 4 "
                                                "frames, the manifest says 6"]
    assert json.loads(path.read_text())["c0000/front.mp4"]["shape"] == [4, SIZE, SIZE]


def test_renderings_are_kept_until_the_flame_file_or_the_renderer_changes(dataset, tmp_path, monkeypatch):
    from flamecast.renderer.flame2video.generator import FlameConditioner
    from flamecast.renderer.flame2video.training.data import ClipCache

    data = tmp_path / "data"
    shutil.copytree(dataset, data, ignore=shutil.ignore_patterns(".cache"))
    clip = check_dataset(data).clips[0]
    drawn = ClipCache(data, SIZE, store=False).render(clip).to(torch.float16)
    assert torch.equal(ClipCache(data, SIZE).get(clip)[1], drawn)  # drawn and stored, bit for bit
    [stored] = (data / ".cache" / "renders").glob("*/*.npz")
    np.savez_compressed(stored, renders=np.full(drawn.shape, 0.25, np.float16))  # what is stored is read back
    assert float(ClipCache(data, SIZE).get(clip)[1].max()) == 0.25

    seq = read_flame(data / clip.flame)
    seq.pose[:, 6] += 0.3  # the jaw opens: the FLAME file changed, its renderings are drawn again
    write_flame(data / clip.flame, seq)
    again = ClipCache(data, SIZE).get(clip)[1]
    assert torch.equal(again, ClipCache(data, SIZE, store=False).render(clip).to(torch.float16))
    assert not torch.equal(again, drawn)

    call = FlameConditioner.__call__
    monkeypatch.setattr(FlameConditioner, "__call__", lambda self, frames: call(self, frames) * 0.5)  # a new renderer
    halved = ClipCache(data, SIZE).get(clip)[1]
    assert torch.equal(halved, ClipCache(data, SIZE, store=False).render(clip).to(torch.float16))
    assert not torch.equal(halved, again)
    assert len(list((data / ".cache" / "renders").glob("*/*.npz"))) == 3


def test_every_phase_trains_and_its_probe_loss_falls(trained):
    _, summaries = trained
    for phase, summary in summaries.items():
        first, last = summary["validations"][0], summary["validations"][-1]
        assert (first["step"], last["step"]) == (0, 4), phase
        assert last["probe_loss"] < first["probe_loss"], (phase, first, last)
        # the held-out clip's loss, measured alike on other data
        assert all(np.isfinite(v["held_out_loss"]) and v["held_out_loss"] != v["probe_loss"]
                   for v in summary["validations"]), phase
    assert summaries["3"]["validations"][-1]["psnr"] is not None
    assert set(summaries["3"]["seconds"]) == {"checks", "setup", "decode", "render", "data", "training", "validation",
                                              "checkpoints", "export", "total"}
    assert summaries["vae"]["validations"][-1]["psnr"] > summaries["vae"]["validations"][0]["psnr"]


def test_phases_train_only_their_modules(trained):
    out, summaries = trained
    assert summaries["2"]["trainable_params"] < summaries["1"]["trainable_params"]
    assert summaries["3"]["trainable_params"] == summaries["2"]["trainable_params"]  # view = motion layout
    videos = sorted((out / "phase-3" / "validation").glob("*.mp4"))
    assert [v.name for v in videos] == ["step-000000-c0001.mp4", "step-000004-c0001.mp4"]
    assert (out / "phase-distill" / "loss.png").stat().st_size > 1000
    assert json.loads((out / "weights" / "flame2video" / "training.json").read_text())["phases"] == \
        ["vae", "1", "2", "3", "distill"]


def test_resume_takes_the_same_steps(trained, dataset, tmp_path):
    from safetensors.torch import load_file

    init = trained[0] / "weights"
    straight = train(settings(dataset, tmp_path / "a", "2", init=init))
    train(settings(dataset, tmp_path / "b", "2", steps=2, init=init, checkpoint_every=2))
    resumed = train(settings(dataset, tmp_path / "b", "2", init=init, resume=True))
    assert resumed["steps"] == straight["steps"] == 4
    a = load_file(tmp_path / "a/weights/flame2video/motion_module/diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b/weights/flame2video/motion_module/diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_phase_starts_from_the_validation_its_weights_ended_with(trained, dataset, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained[0] / "weights", out / "weights")
    two = train(settings(dataset, out, "2", val_every=4))
    three = train(settings(dataset, out, "3", val_every=4))
    start = three["validations"][0]
    assert start["reused"] == "phase 2 step 4" and start["psnr"] == two["validations"][-1]["psnr"]
    assert "reused" not in three["validations"][-1]
    ended, started = out / "phase-2" / "validation" / "step-000004-c0001.mp4", out / "phase-3" / "validation"
    assert (started / "step-000000-c0001.mp4").read_bytes() == ended.read_bytes()

    # a weights file written since: sampled again (here the same bytes, so the same PSNR as reused)
    module = out / "weights" / "flame2video" / "view_module" / "diffusion_pytorch_model.safetensors"
    module.write_bytes(module.read_bytes())
    redone = train(settings(dataset, out, "3", val_every=4, steps=1))
    assert "reused" not in redone["validations"][0]
    assert redone["validations"][0]["psnr"] == three["validations"][-1]["psnr"]


def test_validation_fits_the_held_out_clips(dataset):
    from flamecast.renderer.flame2video.training.validate import fit_to_dataset, validation_clips

    manifest = check_dataset(dataset)  # held-out clips of 2 views and 6 frames
    fitted, why_not = fit_to_dataset(ValidationSettings(views=4, window=4), manifest)
    assert fitted.views == 2 and why_not is None and validation_clips(manifest, fitted)
    fitted, why_not = fit_to_dataset(ValidationSettings(views=1, window=4), manifest)
    assert fitted.views == 1 and why_not is None  # fewer views than the clips have: kept
    _, why_not = fit_to_dataset(ValidationSettings(views=2, window=8), manifest)
    assert "no held-out clip has 8 frames (the longest has 6)" in why_not and "--window" in why_not


def test_export_serves_a_session(trained):
    from flamecast.renderer.flame2video import FLAME2VideoGenerator, FLAME2VideoOptions

    gen = FLAME2VideoGenerator({"device": "cpu", "weights_dir": str(trained[0] / "weights"), "detect_face": False})
    options = FLAME2VideoOptions(profile="tiny", size=SIZE, scheduler="lcm")
    session = gen.open_session(GeneratorSessionSpec("s", None, options))
    frames = [FlameFrame(seq=i, pose=np.full(15, 0.05 * i, np.float32), expression=np.zeros(16)) for i in range(4)]
    out = session.step(frames)
    assert [r.source.seq for r in out] == [0, 1, 2, 3]
    assert out[0].views.shape == (2, SIZE, SIZE, 3)


def test_clear_messages_for_memory_and_8bit_states(tmp_path):
    s = settings(tmp_path, tmp_path, "3", gradient_checkpointing=False)
    text = oom_message(s)
    assert "--batch (now 2)" in text and "--window (now 4)" in text and "--gradient-checkpointing" in text
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(TrainingError, match="bitsandbytes"):
            make_optimizer([torch.nn.Parameter(torch.zeros(1))], settings(tmp_path, tmp_path, "1", optimizer_8bit=True))


def test_commands(dataset, tmp_path):
    from flamecast.renderer.flame2video.training.commands import commands

    cmds = {c.path: c for c in commands()}
    assert set(cmds) == {("train", "flame2video"), ("data", "flame2video")}

    def parse(path, argv):
        p = argparse.ArgumentParser()
        cmds[path].configure(p)
        return p.parse_args(argv)

    assert cmds[("data", "flame2video")].run(parse(("data", "flame2video"), ["check", str(dataset)])) == 0
    with pytest.raises(CommandError, match="manifest.json not found"):
        cmds[("data", "flame2video")].run(parse(("data", "flame2video"), ["check", str(tmp_path)]))
    args = parse(("train", "flame2video"), ["--phase", "1", "--data", str(dataset), "--out", str(tmp_path / "r")])
    with pytest.raises(CommandError, match="--random-init"):
        cmds[("train", "flame2video")].run(args)


def test_build_from_multiview_videos(dataset, tmp_path):
    from flamecast.renderer.flame2video.training.build import build_dataset, multiview_sources

    src = tmp_path / "captures"
    shutil.copytree(dataset / "c0000", src / "take1")
    shutil.copytree(dataset / "c0001", src / "take2")
    seq = read_flame(src / "take2" / "flame.npz")
    write_flame(src / "take2" / "flame.npz", seq.slice(slice(0, 5)))  # one frame short
    with pytest.raises(DatasetError, match="clip take2: video .* has 6 frames, .* has 5"):
        build_dataset(tmp_path / "out", multiview_sources(src), size=SIZE, progress=False)
    manifest = check_dataset(tmp_path / "out")
    assert [c.id for c in manifest.clips] == ["take1"] and manifest.clips[0].view_ids == ("front", "left30")


def test_build_single_view_clips_from_talking_head_videos(dataset, tmp_path):
    from flamecast.renderer.flame2video.training.build import build_dataset, single_view_sources

    src = tmp_path / "videos"
    src.mkdir()
    shutil.copy(dataset / "c0000" / "front.mp4", src / "talk.mp4")
    shutil.copy(dataset / "c0000" / "flame.npz", src / "talk.npz")
    manifest = build_dataset(tmp_path / "out", single_view_sources(src), size=SIZE, val_every=0, progress=False)
    clip = manifest.clips[0]
    assert (clip.id, clip.view_ids, clip.frames, clip.split) == ("talk", ("front",), 6, "train")
    with pytest.raises(DatasetError, match="needs 2"):
        check_dataset(tmp_path / "out", min_views=2)
