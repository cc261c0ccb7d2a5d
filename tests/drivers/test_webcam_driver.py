"""The webcam driver end to end: the harness with the browser's camera, a video file (also
corrupt), a missing camera, calibration and live options, the track command."""

import argparse
import math

import numpy as np
import pytest

from flamecast.drivers.webcam import WebcamDriver
from flamecast.drivers.webcam.commands import eval_command, track_command
from flamecast.drivers.webcam.geometry import euler_xyz, rotation_matrix
from flamecast.drivers.webcam.sources import CameraSource, SourceError
from flamecast.plugins import CommandError
from flamecast.plugins.testing import DriverHarness

from .webcam_media import portrait, rotated, write_video


def _roll(frame) -> float:
    rot = rotation_matrix(frame.joint("global")) @ rotation_matrix(frame.joint("neck"))
    return math.degrees(euler_xyz(rot)[2])


async def _feed(harness, image):
    await harness.feed_video((image, harness.clock.now_ns()))
    return (await harness.collect(1))[0]


async def test_browser_frames_drive_the_head_and_bad_frames_never_jump_it():
    harness = DriverHarness(WebcamDriver, {"source": "browser", "identity_frames": 1, "min_cutoff": 5.0})
    photo = portrait()
    await harness.control("option", calibrate=True)
    frames = [await _feed(harness, rotated(photo, 0)) for _ in range(3)]
    frames += [await _feed(harness, rotated(photo, 20)) for _ in range(20)]
    assert harness.driver.active, "a tracked face drives its layer"
    assert harness.events[0] == {"type": "webcam", "tracker": "landmarks", "source": "browser"}
    assert abs(_roll(frames[0])) < 1.0
    assert _roll(frames[-1]) == pytest.approx(20, abs=3)
    # corrupt items (wrong shape, dtype, not a pair) are skipped; dark, blank and noise frames lose the face
    await harness.feed_video("not a frame")
    await harness.feed_video((np.zeros((10, 10), np.uint8), 0))
    await harness.feed_video((np.zeros((240, 320, 3), np.float32), 0))
    bad = [await _feed(harness, np.zeros((240, 320, 3), np.uint8))]
    bad += [await _feed(harness, np.full((240, 320, 3), 255, np.uint8)) for _ in range(40)]
    bad += [await _feed(harness, np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8)) for i in range(20)]
    assert harness.driver.stats()["skipped"] == 3
    rolls = [_roll(f) for f in frames[-1:] + bad]
    assert max(abs(np.diff(rolls))) < 2.0  # no jump
    assert rolls[1] == pytest.approx(rolls[0], abs=0.5)  # held
    assert abs(rolls[-1]) < 0.5  # eased to rest
    assert not harness.driver.active, "a lost face hands the head to the layers below"
    assert {"type": "webcam", "face": False} in harness.events
    harness.check(frames + bad)
    await harness.close()


async def test_live_options_and_unknown_controls():
    harness = DriverHarness(WebcamDriver, {"source": "browser"})
    reply = await harness.control("option", beta=2.0, mirror=True)
    assert reply == {"options": {"beta": 2.0, "mirror": True}}
    with pytest.raises(ValueError, match="cannot change while running"):
        await harness.control("option", device="1")
    with pytest.raises(ValueError, match="beta"):
        await harness.control("option", beta=-1)
    from flamecast.plugins import ControlNotSupported

    with pytest.raises(ControlNotSupported):
        await harness.control("prompt", "smile")
    await harness.close()


def _video(tmp_path, n=24, angle=15.0):
    photo = portrait(220)
    frames = [rotated(photo, angle * i / n) for i in range(n)]
    return write_video(tmp_path / "face.mp4", frames)


async def test_file_source_reads_every_frame_on_a_fake_clock_and_ends(tmp_path):
    path = _video(tmp_path)
    harness = DriverHarness(WebcamDriver, {"file": str(path), "identity_frames": 1})
    frames = await harness.collect(24)
    assert harness.driver.stats()["frames_in"] == 24
    assert harness.driver.stats()["faces"] >= 22
    assert _roll(frames[-1]) - _roll(frames[0]) > 8
    with pytest.raises(StopAsyncIteration):
        await harness.collect(2)
    await harness.close()


async def test_corrupt_video_is_skipped_not_fatal(tmp_path):
    path = _video(tmp_path, n=30)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for pos in rng.integers(len(data) // 3, 2 * len(data) // 3, 40):
        data[pos:pos + 8] = rng.integers(0, 255, 8, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    harness = DriverHarness(WebcamDriver, {"file": str(path)})
    frames = []
    try:
        while len(frames) < 40:
            frames += await harness.collect(1)
    except StopAsyncIteration:
        pass
    assert len(frames) >= 10
    harness.check(frames)
    await harness.close()


def test_missing_camera_names_the_device():
    with pytest.raises(SourceError, match="/dev/video97"):
        CameraSource("/dev/video97", 640, 480, 30)
    with pytest.raises(SourceError, match="camera '57'"):
        CameraSource("57", 640, 480, 30)


async def test_missing_file_fails_the_driver_with_its_name(tmp_path):
    harness = DriverHarness(WebcamDriver, {"file": str(tmp_path / "nope.mp4")})
    with pytest.raises(SourceError, match="nope.mp4"):
        await harness.collect(1)
    await harness.close()


def test_track_command_writes_a_flame_sequence(tmp_path):
    path = _video(tmp_path, n=20)
    cmd = track_command()
    parser = argparse.ArgumentParser()
    cmd.configure(parser)
    out = tmp_path / "seq.npz"
    assert cmd.run(parser.parse_args([str(path), "--out", str(out), "-o", "identity_frames=1"])) == 0
    data = np.load(out)
    assert data["pose"].shape == (20, 15) and data["expression"].shape == (20, 16)
    assert data["eyelids"].shape == (20, 2) and data["face"].sum() >= 18
    assert str(data["tracker"]) == "landmarks" and list(data["size"]) == [320, 240]
    assert data["t"][0] == 0 and data["fps"] == pytest.approx(30, abs=0.5)
    assert list(data["expression_names"][:2]) == ["smile", "frown"]
    with pytest.raises(CommandError, match="not found"):
        cmd.run(parser.parse_args([str(tmp_path / "missing.mp4"), "--out", str(out)]))
    with pytest.raises(CommandError, match="bogus"):
        cmd.run(parser.parse_args([str(path), "--out", str(out), "-o", "bogus=1"]))
    assert eval_command().path == ("eval", "webcam")


def test_plugin_registers_driver_and_commands():
    import flamecast.drivers.webcam as plugin

    drivers, commands = [], []
    plugin.flamecast_register_drivers(register=drivers.append)
    plugin.flamecast_register_commands(register=commands.append)
    assert drivers == [WebcamDriver] and WebcamDriver.needs_video
    assert sorted(c.path for c in commands) == [("eval", "webcam"), ("track",)]
