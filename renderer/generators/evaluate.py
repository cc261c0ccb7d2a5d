"""``flamecast eval generator``: does a generator's front view look like the photo, and does it
follow the driver? The same measurements for every generator.

- **It is the photo**: drive one frame at the portrait's own fitted pose and expression
  (``fitting.fit_portrait`` on the portrait's FaceMesh landmarks) and compare the front view to
  the portrait crop, PSNR over the whole frame. The crop is the session's ``reference`` (a
  ``(H, W, 3)`` image) when the session has one; otherwise the portrait is aligned to the view
  by a similarity between the two images' FaceMesh landmarks.
- **It follows the driver**: sweep the head's yaw (±25 degrees), pitch and roll (±15) with the
  rest at the photo's values, run FaceMesh on each front view, fit the head to those landmarks
  and compare the recovered angle with the commanded one (median absolute error); sweep the jaw
  (0 to 0.35 rad) and correlate the mouth opening FaceMesh measures with it.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

import numpy as np

YAWS = tuple(np.linspace(-25.0, 25.0, 11))
PITCHES = tuple(np.linspace(-15.0, 15.0, 7))
ROLLS = tuple(np.linspace(-15.0, 15.0, 7))
JAWS = tuple(np.linspace(0.0, 0.35, 8))
MISSED_DEG = 90.0  # the error counted when FaceMesh finds no face in a view
FIT_STEPS = 120
UPPER_LIP, LOWER_LIP, FOREHEAD, CHIN = 13, 14, 10, 152


@dataclass
class GeneratorReport:
    generator: str
    psnr_db: float | None = None
    yaw_median_deg: float | None = None
    pitch_median_deg: float | None = None
    roll_median_deg: float | None = None
    jaw_correlation: float | None = None
    missed_faces: int = 0
    error: str | None = None
    details: dict = field(default_factory=dict)

    def passed(self) -> bool:
        if self.error is not None:
            return False
        return (self.psnr_db >= 30.0 and max(self.yaw_median_deg, self.pitch_median_deg, self.roll_median_deg) <= 5.0
                and self.jaw_correlation >= 0.8)


def evaluate(generator_name: str, portrait: bytes | None = None, *, size: int = 256, yaws=YAWS, pitches=PITCHES,
             rolls=ROLLS, jaws=JAWS, settings: dict | None = None) -> GeneratorReport:
    """Open a one-view session of the named generator and measure it (module docstring)."""
    import torch

    from flamecast.plugins import GeneratorSessionSpec, GeneratorUnavailable, PortraitError
    from flamecast.plugins.manager import make_plugin_host
    from flamecast.renderer.head import load_head
    from flamecast.renderer.portrait import load_portrait

    from .fitting import fit_portrait

    report = GeneratorReport(generator_name)
    try:
        cls = make_plugin_host().generators.get(generator_name)
    except KeyError:
        cls = None
    if cls is None:
        report.error = f"no generator named {generator_name!r} is installed"
        return report
    head = load_head("builtin").eval()
    photo = load_portrait(portrait)
    with torch.inference_mode(False):
        fit = fit_portrait(head, photo.landmarks, iterations=200)
    try:
        gen = cls(dict(settings or {}))
        options = cls.Options.model_validate({"views": ["front"], "size": size})
        session = gen.open_session(GeneratorSessionSpec("eval", portrait, options))
    except (GeneratorUnavailable, PortraitError, ImportError, RuntimeError) as exc:
        report.error = f"cannot run here: {exc}"
        return report
    fit = getattr(session, "fit", fit)
    base_pose = fit.pose.cpu().numpy().astype(np.float32)
    base_expr = fit.expression.cpu().numpy().astype(np.float32)
    render = _renderer(session, base_expr)
    front = render(base_pose)
    reference = getattr(session, "reference", None)
    if reference is None:
        reference = _aligned_portrait(photo, front)
    report.psnr_db = psnr(front, reference) if reference is not None else 0.0
    _pose_sweeps(report, head, render, base_pose, yaws, pitches, rolls)
    _jaw_sweep(report, render, base_pose, jaws)
    session.close()
    return report


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def _renderer(session, expression):
    from flamecast.plugins import FlameFrame

    counter = iter(range(1 << 30))

    def render(pose, expr=None) -> np.ndarray:
        frame = FlameFrame(session_id="eval", seq=next(counter), capture_ns=0, pose=np.asarray(pose, np.float32),
                           expression=np.asarray(expression if expr is None else expr, np.float32))
        out = session.step([frame])
        return out[0].views[0]

    return render


def _landmarks(image: np.ndarray):
    from flamecast.renderer.portrait import detect_faces

    faces = detect_faces(image)
    return faces[0] if faces else None


def _pose_sweeps(report, head, render, base_pose, yaws, pitches, rolls) -> None:
    import torch

    from flamecast.renderer.head.lbs import rodrigues

    from .fitting import fit_portrait, rotation_vector
    from .portrait.motion import euler_yxz, from_euler_yxz

    base = euler_yxz(rodrigues(torch.tensor(base_pose[:3], dtype=torch.float64)).numpy())
    for axis, name, values in ((0, "yaw", yaws), (1, "pitch", pitches), (2, "roll", rolls)):
        errors = []
        for deg in values:
            angles = base.copy()
            angles[axis] = np.radians(deg)
            pose = base_pose.copy()
            pose[:3] = rotation_vector(from_euler_yxz(angles))
            lmk = _landmarks(render(pose))
            if lmk is None:
                report.missed_faces += 1
                errors.append(MISSED_DEG)
                continue
            with torch.inference_mode(False):
                seen = fit_portrait(head, lmk, iterations=FIT_STEPS).pose[:3].double()
            got = np.degrees(euler_yxz(rodrigues(seen).numpy())[axis])
            errors.append(abs(got - deg))
        setattr(report, f"{name}_median_deg", float(np.median(errors)))
        report.details[f"{name}_errors_deg"] = [round(float(e), 2) for e in errors]


def _jaw_sweep(report, render, base_pose, jaws) -> None:
    openings = []
    for jaw in jaws:
        pose = base_pose.copy()
        pose[6] = jaw
        lmk = _landmarks(render(pose))
        if lmk is None:
            report.missed_faces += 1
            openings.append(0.0)
            continue
        face = float(np.linalg.norm(lmk[CHIN, :2] - lmk[FOREHEAD, :2]))
        openings.append(float(np.linalg.norm(lmk[LOWER_LIP, :2] - lmk[UPPER_LIP, :2])) / max(face, 1e-6))
    report.details["mouth_openings"] = [round(o, 4) for o in openings]
    report.jaw_correlation = float(np.corrcoef(jaws, openings)[0, 1]) if np.std(openings) > 0 else 0.0


def _aligned_portrait(photo, front: np.ndarray):
    """The portrait warped onto the front view by a similarity between their landmarks."""
    import cv2

    seen = _landmarks(front)
    if seen is None:
        return None
    m, _ = cv2.estimateAffinePartial2D(photo.landmarks[:, :2].astype(np.float32), seen[:, :2].astype(np.float32))
    if m is None:
        return None
    h, w = front.shape[:2]
    return cv2.warpAffine(photo.image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ---------------------------------------------------------------- the command


def eval_command():
    from flamecast.plugins import Command

    return Command(path=("eval", "generator"), help="how well generators reproduce the photo and follow the driver",
                   configure=_configure, run=_run, description=__doc__)


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generator", action="append", default=None,
                        help="generator to measure (repeatable; default: portrait, mesh and flame2video where it runs)")
    parser.add_argument("--portrait", default=None, help="portrait image file (default: the built-in portrait)")
    parser.add_argument("--size", type=int, default=256, help="side of the front view in pixels")
    parser.add_argument("--json", default=None, help="also write the reports to this JSON file")


def _run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from flamecast.plugins import CommandError

    torch.set_num_threads(1)
    portrait = None
    if args.portrait:
        path = Path(args.portrait)
        if not path.is_file():
            raise CommandError(f"--portrait {path}: no such file")
        portrait = path.read_bytes()
    names = args.generator or ["portrait", "mesh", "flame2video"]
    reports = [evaluate(name, portrait, size=args.size) for name in names]
    print(format_table(reports))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in reports], indent=2))
    return 0 if all(r.passed() or r.error for r in reports) else 1


def format_table(reports) -> str:
    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    lines = ["| generator | PSNR (dB, >= 30) | yaw / pitch / roll median error (deg, <= 5) | jaw correlation (>= 0.8) | missed faces | verdict |",
             "|---|---|---|---|---|---|"]
    for r in reports:
        if r.error:
            lines.append(f"| {r.generator} | - | - | - | - | {r.error} |")
            continue
        lines.append(f"| {r.generator} | {num(r.psnr_db, '.1f')} | {num(r.yaw_median_deg, '.1f')} / "
                     f"{num(r.pitch_median_deg, '.1f')} / {num(r.roll_median_deg, '.1f')} | "
                     f"{num(r.jaw_correlation, '.2f')} | {r.missed_faces} | {'pass' if r.passed() else 'fail'} |")
    return "\n".join(lines)
