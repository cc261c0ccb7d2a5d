"""Datasets from captures without FLAME files: the build tracks them with the webcam driver's
tracker (``flamecast track`` in a child process) and the tracked motion is the motion in the
video; a tracker that fails or is missing is reported per clip."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from flamecast.plugins import CommandError
from flamecast.renderer.flame2video.training.build import SourceClip
from flamecast.renderer.flame2video.training.layout import DatasetError, read_flame, write_video
from flamecast.renderer.flame2video.training.tracking import track_argv, track_missing


def _run_data(argv):
    import argparse

    from flamecast.renderer.flame2video.training.commands import commands

    cmd = {c.path: c for c in commands()}[("data", "flame2video")]
    p = argparse.ArgumentParser()
    cmd.configure(p)
    return cmd.run(p.parse_args(argv))


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """One clip, two synchronized views of the textured head opening and closing its jaw."""
    from flamecast.plugins import GeneratorSessionSpec, pose_slice
    from flamecast.renderer.generators.mesh import MeshGenerator, MeshOptions

    n = 40
    t = np.arange(n) / 25.0
    jaw = 0.25 * np.sin(np.pi * t / 0.8) ** 2
    session = MeshGenerator().open_session(GeneratorSessionSpec("c", None, MeshOptions(views=("front", "left30"), size=256)))
    pose = np.zeros((n, 15), np.float32)
    pose[:, pose_slice("jaw")] = np.stack([jaw, 0 * jaw, 0 * jaw], 1)
    expression = np.zeros((n, session.head.n_expression), np.float32)
    views = session.render_arrays(pose, expression).cpu().numpy()  # (T, V, H, W, 3)
    session.close()
    root = tmp_path_factory.mktemp("captures")
    for v, view in enumerate(("front", "left30")):
        write_video(root / "clip0" / f"{view}.mp4", views[:, v])
    return root, jaw


def test_a_capture_without_flame_is_tracked_into_the_dataset(captures, tmp_path):
    root, jaw = captures
    assert _run_data(["build", "--multiview", str(root), "--out", str(tmp_path / "data"), "--size", "128",
                      "--val-every", "0"]) == 0
    flame = read_flame(root / "clip0" / "flame.npz")  # written beside the videos: a rerun reuses it
    assert flame.pose.shape == (40, 15)
    tracked_jaw = flame.pose[:, 6]
    assert np.corrcoef(jaw, tracked_jaw)[0, 1] > 0.7  # the tracker saw the jaw move
    built = read_flame(tmp_path / "data" / "clip0" / "flame.npz")
    np.testing.assert_array_equal(built.pose, flame.pose)


def test_no_track_refuses_clips_without_flame(tmp_path):
    clip = tmp_path / "caps" / "c"
    write_video(clip / "front.mp4", np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises((CommandError, DatasetError), match="flame"):
        _run_data(["build", "--multiview", str(tmp_path / "caps"), "--out", str(tmp_path / "d"), "--no-track"])


def test_tracking_failures_name_the_clip_and_the_reason(tmp_path):
    clips = [SourceClip("a", {"left30": tmp_path / "a_left.mp4", "front": tmp_path / "a_front.mp4"}, tmp_path / "a.npz"),
             SourceClip("b", {"front": tmp_path / "b.mp4"}, tmp_path / "b.npz")]
    seen = []

    def fails(argv):
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 2, "", "flamecast: error: argument command: invalid choice: 'track'")

    with pytest.raises(DatasetError) as err:
        track_missing(clips, run=fails, progress=lambda _: None)
    assert "a:" in str(err.value) and "b:" in str(err.value) and "webcam driver plugin" in str(err.value)
    assert seen[0][seen[0].index("track") + 1] == str(tmp_path / "a_front.mp4")  # the front view is tracked
    assert track_argv(tmp_path / "v.mp4", tmp_path / "v.npz", "flame2020", ["tracker=deca"])[-4:] == [
        "--head", "flame2020", "--option", "tracker=deca"]
