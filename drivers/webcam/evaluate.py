"""``flamecast eval webcam``: the driver on inputs whose motion is known.

1. **Photograph.** ``skimage.data.astronaut()`` scaled into a 640 x 480 frame, moved and
   rotated in-plane by known amounts over time (roll up to ``ROLL_DEG``, sideways and vertical
   shifts). The whole driver runs (browser-camera path, One-Euro filter on); the first frame
   is taken as neutral (calibration), so roll is measured relative to it. Target: median roll
   error <= 3 degrees.
2. **Renders.** The built-in head textured from the astronaut photograph (the ``mesh``
   generator's renderer) with known yaw, pitch, roll, jaw opening and blinks. Targets: median
   yaw and pitch error <= 5 degrees, jaw correlation >= 0.8.

The renders need ``flamecast.renderer``; this module imports it only inside ``render_head``,
which the command calls (commands compose); the driver itself never imports it.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import numpy as np

from flamecast.plugins import pose_slice

from .geometry import euler_xyz, rotation_matrix

FPS = 30.0
ROLL_DEG = 25.0
YAW_DEG, PITCH_DEG, RENDER_ROLL_DEG = 30.0, 15.0, 10.0
JAW_MAX = 0.3
TARGETS = {"photo_roll_median_deg": 3.0, "render_yaw_median_deg": 5.0, "render_pitch_median_deg": 5.0,
           "render_jaw_correlation": 0.8}


@dataclass
class Truth:
    """Known per-frame head rotation (pitch, yaw, roll in radians), jaw and eyelid closure."""

    euler: np.ndarray  # (N, 3)
    jaw: np.ndarray  # (N,)
    blink: np.ndarray  # (N,)


def photo_sequence(n: int, size=(640, 480), motion: int = 0) -> tuple[list[np.ndarray], Truth]:
    """The astronaut moved and rotated in-plane; positive roll turns the image counter-clockwise.
    ``motion`` 0 is the documented motion; another number draws amplitudes and periods from it."""
    import cv2
    from skimage import data

    m = KnownMotion.draw(motion)
    photo = cv2.resize(data.astronaut(), (400, 400), interpolation=cv2.INTER_AREA)
    w, h = size
    frames, rolls = [], []
    for i in range(n):
        t = i / FPS
        roll = m.photo_roll_deg * math.sin(2 * math.pi * t / m.photo_roll_period)
        dx, dy = m.shift[0] * math.sin(2 * math.pi * t / 5.0), m.shift[1] * math.sin(2 * math.pi * t / 3.0)
        rot = cv2.getRotationMatrix2D((200.0, 200.0), roll, 1.0)
        rot[:, 2] += [w / 2 - 200 + dx, h / 2 - 200 + dy]
        frames.append(cv2.warpAffine(photo, rot, (w, h), borderMode=cv2.BORDER_REPLICATE))
        rolls.append(math.radians(roll))
    euler = np.zeros((n, 3))
    euler[:, 2] = rolls
    return frames, Truth(euler, np.zeros(n), np.zeros(n))


@dataclass(frozen=True)
class KnownMotion:
    """Amplitudes (degrees, radians for the jaw) and periods (seconds) of the known motion. Every
    curve starts at zero, so the first frame is the neutral face the driver calibrates on."""

    photo_roll_deg: float = ROLL_DEG
    photo_roll_period: float = 4.0
    shift: tuple[float, float] = (60.0, 30.0)
    amplitude_deg: tuple[float, float, float] = (PITCH_DEG, YAW_DEG, RENDER_ROLL_DEG)  # pitch, yaw, roll
    period: tuple[float, float, float] = (3.0, 4.0, 5.0)
    jaw: float = JAW_MAX
    jaw_period: float = 1.3  # the jaw opens and closes once per period
    jaw_power: float = 1.0
    blinks: tuple[float, ...] = (1.0, 2.6, 3.7)

    @classmethod
    def draw(cls, motion: int) -> KnownMotion:
        """``motion`` 0: the documented motion; any other number: one drawn from that seed, with
        signs, amplitudes, periods and jaw shape within the ranges a webcam user moves in."""
        if motion == 0:
            return cls()
        rng = np.random.default_rng(motion)
        sign = rng.choice([-1.0, 1.0], 4)
        return cls(
            photo_roll_deg=float(sign[0] * rng.uniform(10, 30)), photo_roll_period=float(rng.uniform(3, 6)),
            shift=(float(rng.uniform(0, 80)), float(rng.uniform(0, 40))),
            amplitude_deg=tuple(float(s * rng.uniform(lo, hi)) for s, (lo, hi) in
                                zip(sign[1:], ((5, 20), (10, 35), (3, 12)))),
            period=tuple(float(rng.uniform(2.0, 6.0)) for _ in range(3)),
            jaw=float(rng.uniform(0.15, 0.35)), jaw_period=float(rng.uniform(0.7, 2.0)),
            jaw_power=float(rng.uniform(0.5, 2.0)),
            blinks=tuple(float(x) for x in 0.5 + np.cumsum(rng.uniform(0.4, 1.4, 3))),
        )


def render_truth(n: int, motion: int = 0) -> Truth:
    m = KnownMotion.draw(motion)
    t = np.arange(n) / FPS
    euler = np.stack([np.radians(a) * np.sin(2 * np.pi * t / p) for a, p in zip(m.amplitude_deg, m.period)], axis=1)
    jaw = m.jaw * (np.sin(np.pi * t / m.jaw_period) ** 2) ** m.jaw_power
    blink = np.zeros(n)
    for start in m.blinks:
        phase = (t - start) / 0.25
        inside = (phase >= 0) & (phase <= 1)
        blink[inside] = np.sin(np.pi * phase[inside]) ** 2
    return Truth(euler, jaw, blink)


def euler_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (the order ``geometry.euler_xyz`` inverts)."""
    return rotation_matrix([0, 0, roll]) @ rotation_matrix([0, yaw, 0]) @ rotation_matrix([pitch, 0, 0])


def render_head(truth: Truth, size: int = 480) -> list[np.ndarray]:
    """Front renders of the textured built-in head with the known parameters."""
    import torch

    from flamecast.plugins import GeneratorSessionSpec
    from flamecast.renderer.generators.mesh import MeshGenerator, MeshOptions

    from .geometry import axis_angle

    generator = MeshGenerator()
    session = generator.open_session(GeneratorSessionSpec("eval", None, MeshOptions(views=("front",), size=size)))
    n = len(truth.jaw)
    pose = np.zeros((n, 15), np.float32)
    for i in range(n):
        pose[i, pose_slice("global")] = axis_angle(euler_matrix(*truth.euler[i]))
        pose[i, pose_slice("jaw")] = [truth.jaw[i], 0, 0]
    eyelids = np.repeat(truth.blink[:, None], 2, axis=1).astype(np.float32)
    expression = np.zeros((n, session.head.n_expression), np.float32)
    frames = []
    with torch.inference_mode():
        for start in range(0, n, 16):
            sl = slice(start, start + 16)
            views = session.render_arrays(pose[sl], expression[sl], eyelids[sl]).cpu().numpy()
            frames.extend(np.ascontiguousarray(v[0]) for v in views)
    session.close()
    return frames


async def _drive(frames: list[np.ndarray], options: dict) -> list:
    from flamecast.plugins.testing import DriverHarness

    from .driver import WebcamDriver

    harness = DriverHarness(WebcamDriver, {"source": "browser", **options}, rate=FPS)
    out = []
    await harness.control("option", calibrate=True)
    try:
        for image in frames:
            await harness.feed_video((image, int(harness.clock.now_ns())))
            out.extend(await harness.collect(1))
    finally:
        await harness.close()
    return out


def drive(frames: list[np.ndarray], **options) -> list:
    """Run the webcam driver over frames (one per driver frame); the first is the neutral face."""
    return asyncio.run(_drive(frames, options))


def measured(frames: list) -> Truth:
    euler, jaw, blink = [], [], []
    for f in frames:
        rot = rotation_matrix(f.joint("global")) @ rotation_matrix(f.joint("neck"))
        euler.append(euler_xyz(rot))
        jaw.append(float(f.joint("jaw")[0]))
        blink.append(float(f.eyelids.mean()) if f.eyelids is not None else 0.0)
    return Truth(np.array(euler), np.array(jaw), np.array(blink))


def errors(truth: Truth, got: Truth, skip: int) -> dict[str, float]:
    """Median absolute errors (degrees) and correlations after the first ``skip`` frames."""
    d = np.degrees(np.abs(got.euler - truth.euler))[skip:]
    out = {f"{name}_median_deg": float(np.median(d[:, k])) for k, name in enumerate(("pitch", "yaw", "roll"))}
    out.update({f"{name}_p90_deg": float(np.percentile(d[:, k], 90)) for k, name in enumerate(("pitch", "yaw", "roll"))})
    for name, a, b in (("jaw", truth.jaw, got.jaw), ("blink", truth.blink, got.blink)):
        a, b = a[skip:], b[skip:]
        out[f"{name}_correlation"] = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return out


def evaluate(n_photo: int = 150, n_render: int = 150, size: int = 480, options: dict | None = None,
             motion: int = 0) -> dict[str, float]:
    """Both tests; returns the figures, prefixed ``photo_`` and ``render_``. ``motion``: which
    known motion (``KnownMotion.draw``)."""
    options = options or {}
    skip = 5  # frames while the identity fit settles
    frames, truth = photo_sequence(n_photo, motion=motion)
    photo = errors(truth, measured(drive(frames, **options)), skip)
    truth = render_truth(n_render, motion)
    render = errors(truth, measured(drive(render_head(truth, size), **options)), skip)
    out = {f"photo_{k}": v for k, v in photo.items() if k.startswith("roll")}
    out.update({f"render_{k}": v for k, v in render.items()})
    return out
