"""``flamecast bench``: speed of a generator backend on synthetic driving frames.

    flamecast bench --backend flame2video --profile live,hq,paper --allow-random-weights \\
        --device cuda --json bench.json

For each profile: open a session (default portrait), warm up, then

* throughput: feed frames one at a time as fast as the backend takes them; output frames per
  second (each frame carries all its views);
* latency: feed frames paced at ``--fps`` (or at 90% of the measured throughput when the
  backend is slower than that), and time each driving frame from its arrival to its views
  coming out (p50/p95/max);
* peak GPU memory of the open session (``torch.cuda.max_memory_allocated`` from after the
  session opened to the end: its weights, caches and work), and separately the peak while
  loading and opening;
* per-stage times when the backend reports them (``stage_times()``), from a last short pass
  (``--stage-frames``): timing a stage synchronises the GPU around it, which would slow the
  throughput and latency passes.

Works for any registered generator backend; ``--profile`` is passed only to backends whose
options have a ``profile`` field. A profile may carry option overrides after colons, to compare
variants in one run: ``--profile live,live:carry_mode=renoise,live:steps=2``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

from flamecast.plugins import Command, CommandError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="flame2video", help="registered generator backend (flamecast plugins)")
    p.add_argument("--profile", default="live", help="profile, or several separated by commas (run in order)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--weights-dir", help="weights directory (default: $FLAMECAST_WEIGHTS or ~/.cache/flamecast/weights)")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="run with random weights when weights are missing (benchmarks only: the output is noise)")
    p.add_argument("--frames", type=int, default=64, help="driving frames per measurement pass")
    p.add_argument("--warmup", type=int, default=16, help="driving frames before measuring (compiled runs)")
    p.add_argument("--eager-warmup", type=int, default=8, help="driving frames before measuring without --compile")
    p.add_argument("--fps", type=float, default=30.0, help="driving frame rate of the latency pass")
    p.add_argument("--stage-frames", type=int, default=16,
                   help="driving frames of the per-stage timing pass (after the others: it synchronises the GPU)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="stop a pass after this long")
    p.add_argument("--compile", default=None, help="torch.compile mode for the generator (default, reduce-overhead, ...)")
    p.add_argument("--eager", default="paper", help="profiles that always run without --compile (comma list)")
    p.add_argument("--size", type=int, help="override the output side")
    p.add_argument("--no-face-detect", action="store_true",
                   help="centre-crop the portrait instead of finding the face (machines without mediapipe)")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="leave the objects warm-up made to Python's garbage collector (by default they are frozen after "
                   "warm-up, as `flamecast generator` does)")
    p.add_argument("--json", dest="json_out", help="write the results here as JSON")


def synthetic_frames(n: int, n_expression: int, start: int = 0):
    """Smooth head motion, jaw and expression: frame i of a 30 frames/s stream."""
    import numpy as np

    from flamecast.plugins import FlameFrame

    frames = []
    for i in range(start, start + n):
        t = i / 30.0
        pose = np.zeros(15, np.float32)
        pose[1] = 0.3 * math.sin(0.7 * t)  # yaw
        pose[0] = 0.1 * math.sin(0.5 * t)  # pitch
        pose[6] = 0.15 * (1 + math.sin(6.0 * t))  # jaw open
        expr = 0.5 * np.sin(t * (1 + np.arange(n_expression, dtype=np.float32) * 0.3)).astype(np.float32)
        frames.append(FlameFrame(session_id="bench", seq=i, capture_ns=0, pose=pose, expression=expr))
    return frames


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _cuda(device: str) -> Any:
    import torch

    return torch if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else None


def throughput_pass(session, frames, max_seconds: float) -> dict[str, Any]:
    out, t0 = 0, time.perf_counter()
    fed = 0
    for f in frames:
        out += len(session.step([f]))
        fed += 1
        if time.perf_counter() - t0 > max_seconds:
            break
    dt = time.perf_counter() - t0
    return {"frames_in": fed, "frames_out": out, "seconds": dt, "fps": out / dt if dt > 0 else None}


def first_output(session, take, max_seconds: float) -> tuple[float | None, int]:
    """Seconds from the first driving frame to the session's first output (a windowed generator
    needs a window of frames first), and how many frames that took."""
    t0, fed = time.perf_counter(), 0
    while time.perf_counter() - t0 < max_seconds:
        fed += 1
        if session.step(take(1)):
            return time.perf_counter() - t0, fed
    return None, fed


def latency_pass(session, frames, fps: float, max_seconds: float) -> dict[str, Any]:
    arrivals: dict[int, float] = {}
    latencies: list[float] = []
    t0 = time.perf_counter()
    fed = 0
    for i, f in enumerate(frames):
        due = t0 + i / fps
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        arrivals[f.seq] = due
        for r in session.step([f]):
            latencies.append(time.perf_counter() - arrivals[r.source.seq])
        fed += 1
        if time.perf_counter() - t0 > max_seconds:
            break
    ms = [1e3 * x for x in latencies]
    return {"paced_fps": fps, "frames_in": fed, "frames_out": len(ms), "p50_ms": percentile(ms, 0.5),
            "p95_ms": percentile(ms, 0.95), "max_ms": max(ms) if ms else None}


def split_profile(spec: str) -> tuple[str, dict[str, str]]:
    """``"live:carry_mode=renoise:steps=2"`` -> ("live", {"carry_mode": "renoise", "steps": "2"})."""
    from flamecast.plugins import split_spec

    try:
        return split_spec(spec)
    except ValueError as exc:
        raise CommandError(f"profile {exc}") from None


def _options(cls, profile: str, size: int | None) -> Any:
    from pydantic import ValidationError


    fields = getattr(cls.Options, "model_fields", {})
    name, overrides = split_profile(profile)
    data: dict[str, Any] = dict(overrides)
    if "profile" in fields:
        data["profile"] = name
    if size:
        data["size"] = str(size)
    try:
        return cls.Options.model_validate_strings(data)
    except ValidationError as exc:
        raise CommandError(f"profile {profile!r}: {exc}") from None


def _settings(cls, profile: str, args: argparse.Namespace):
    """The generator's settings for one profile: compiled unless the profile is eager, and the
    profile compiled before the session opens (warm_profiles), as a worker does."""
    from flamecast.plugins import GeneratorSettings

    eager = {p.strip() for p in (args.eager or "").split(",") if p.strip()}
    compile_mode = None if split_profile(profile)[0] in eager else args.compile
    has_profiles = "profile" in getattr(cls.Options, "model_fields", {})
    return GeneratorSettings(device=args.device, weights_dir=args.weights_dir,
                             allow_random_weights=args.allow_random_weights, compile=compile_mode,
                             detect_face=not args.no_face_detect,
                             warm_profiles=(warm_spec(profile, args.size),) if compile_mode and has_profiles else None)


def warm_spec(profile: str, size: int | None) -> str:
    """The warm_profiles entry that compiles what the bench's session will run: the profile with
    its overrides, and the size when one is asked for."""
    return f"{profile}:size={size}" if size else profile


class FrameSource:
    """Synthetic driving frames, numbered on from where the last batch ended."""

    def __init__(self, n_expression: int) -> None:
        self.n_expression, self.seq = n_expression, 0

    def __call__(self, n: int):
        frames = synthetic_frames(n, self.n_expression, self.seq)
        self.seq += n
        return frames


def _passes(session, take, args: argparse.Namespace, compiled: bool) -> dict[str, Any]:
    """First output, warm-up, throughput, latency and (last, since it synchronises) stage times."""
    first_frame_s, first_fed = first_output(session, take, 10 * args.max_seconds)
    t0 = time.perf_counter()
    throughput_pass(session, take(args.warmup if compiled else min(args.warmup, args.eager_warmup)), 10 * args.max_seconds)
    out: dict[str, Any] = {"first_frame_s": first_frame_s, "first_frame_after_frames_in": first_fed,
                           "warmup_s": time.perf_counter() - t0}
    out["throughput"] = thr = throughput_pass(session, take(args.frames), args.max_seconds)
    pace = args.fps if (thr["fps"] or 0) >= args.fps else 0.9 * (thr["fps"] or 1.0)
    out["latency"] = latency_pass(session, take(args.frames), pace, args.max_seconds)
    if hasattr(session, "enable_stage_timing"):
        session.enable_stage_timing()
        throughput_pass(session, take(args.stage_frames), args.max_seconds)
        out["stages"] = session.stage_times()
        session.enable_stage_timing(False)
    return out


def bench_profile(cls, profile: str, args: argparse.Namespace) -> dict[str, Any]:
    from flamecast.plugins import GeneratorSessionSpec
    from flamecast.renderer.worker import heap

    torch = _cuda(args.device)
    settings = _settings(cls, profile, args)
    if torch is not None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    gen = cls(settings)
    t0 = time.perf_counter()
    if hasattr(gen, "warm_up"):
        gen.warm_up()
    warm_up_s = time.perf_counter() - t0
    frozen = None if args.no_gc_freeze else heap.freeze()  # as the worker does after warm-up
    t0 = time.perf_counter()
    session = gen.open_session(GeneratorSessionSpec("bench", None, _options(cls, profile, args.size)))
    open_s = time.perf_counter() - t0
    if torch is not None:  # from here on: what the open session needs (weights + its work)
        load_peak = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    timer = heap.CollectionTimer().start()
    try:
        passes = _passes(session, FrameSource(gen.head.n_expression), args, bool(settings.compile))
    finally:
        timer.stop()
    result: dict[str, Any] = {
        "backend": cls.name, "profile": profile if "profile" in getattr(cls.Options, "model_fields", {}) else None,
        "compile": settings.compile, "generator_warm_up_s": warm_up_s, "open_s": open_s, **passes,
        "view_ids": list(getattr(session, "view_ids", ()) or ()),
    }
    result["gc"] = {**timer.summary(), "frozen": frozen.objects if frozen else None}
    if hasattr(session, "describe"):
        result["config"] = session.describe()
    if hasattr(gen, "compile_report"):  # compilations and CUDA-graph recordings after warm-up
        result["compile_counts"] = gen.compile_report()
    if torch is not None:
        result.update(peak_gpu_mem_gb=torch.cuda.max_memory_allocated() / 2**30, load_peak_gpu_mem_gb=load_peak,
                      peak_gpu_reserved_gb=torch.cuda.max_memory_reserved() / 2**30)
    session.close()
    gen.close()
    return result


def _command_line(args: argparse.Namespace) -> str:
    """The bench command with every setting spelled out (defaults included), to rerun it."""
    parts = ["flamecast", "bench"]
    for key, value in sorted(vars(args).items()):
        if key in ("run", "command_name", "verbose") or value is None or value is False:
            continue
        flag = "--" + ("json" if key == "json_out" else key.replace("_", "-"))
        parts += [flag] if value is True else [flag, str(value)]
    return " ".join(parts)


def _environment(args: argparse.Namespace) -> dict[str, Any]:
    import platform

    import torch

    env = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": _command_line(args),
           "torch": torch.__version__, "python": platform.python_version(), "host_cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
    return env


def _write(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Written after every profile, so a cut-off run keeps what it measured."""
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(report, fh, indent=2, default=str)


def _summary(r: dict[str, Any]) -> str:
    thr, lat = r["throughput"], r["latency"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    mem = f"  peak {r['peak_gpu_mem_gb']:.1f} GB" if "peak_gpu_mem_gb" in r else ""
    name = r["backend"] + (f"/{r['profile']}" if r["profile"] else "")
    return (f"{name}: {fmt(thr['fps'])} frames/s; latency p50 {fmt(lat['p50_ms'])} ms "
            f"p95 {fmt(lat['p95_ms'])} ms at {lat['paced_fps']:.1f} fps in{mem}")


def run(args: argparse.Namespace) -> int:
    from flamecast.plugins import GeneratorUnavailable
    from flamecast.plugins.manager import make_plugin_host

    host = make_plugin_host()
    try:
        cls = host.generators.get(args.backend)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    profiles = [p.strip() for p in args.profile.split(",") if p.strip()]
    report = {"environment": _environment(args), "results": []}
    for profile in profiles:
        try:
            result = bench_profile(cls, profile, args)
        except GeneratorUnavailable as exc:
            raise CommandError(str(exc)) from None
        report["results"].append(result)
        print(_summary(result), flush=True)
        _write(args, report)
        counts = result.get("compile_counts") or {}
        if counts.get("recompiles") or counts.get("cudagraph_rerecords"):
            raise CommandError(f"{result['backend']}/{profile}: {counts['recompiles']} compilation(s) and "
                               f"{counts['cudagraph_rerecords']} CUDA-graph recording(s) after warm-up; the "
                               "figures above include them and do not count (see compile_counts in the JSON)")
    by = {r["profile"]: r["throughput"]["fps"] for r in report["results"]}
    if by.get("live") and by.get("paper"):
        report["live_over_paper"] = by["live"] / by["paper"]
        print(f"live / paper throughput: {report['live_over_paper']:.1f}x")
        _write(args, report)
    return 0


COMMAND = Command(
    path=("bench",),
    help="measure a generator backend's throughput, latency and memory",
    configure=configure,
    run=run,
)
