"""FLAME2Video as a service: time to ready, first frame, concurrent sessions, no recompiles.

    T0=$(date +%s.%N) python bench/flame2video_service.py --profile live --sessions 1,2,4,8 \
        --seconds 10 --device cuda --compile reduce-overhead --allow-random-weights --json out.json

One process does what a generator worker does: build the generator and ``warm_up()`` (compile
and capture every shape the profile will run), then serve. It reports

* ``ready_s``: from ``$T0`` (the shell's clock when the process was started; else this script's
  start) until ``warm_up()`` returned, and ``warm_up_s`` on its own; a second run with the same
  compile cache (``$FLAMECAST_COMPILE_CACHE``) is what a restarted worker costs; ``compile_at_warm_up``
  holds ``warm_up_parts``, where warm-up went (model build, session opens, first windows, each
  batch size's compile and capture), ``build_parts``, where the build went (imports, the CUDA context,
  the models, the pipeline around them, setting compilation up), ``compile_phases_s``, the compile time per phase in
  torch's own accounting (Dynamo's tracing, AOTAutograd and Inductor, code generation), and
  ``precompiled``: per profile, the UNet's and decoder's compiled calls loaded from the cache
  and those compiled (and written to it) with the seconds each took;
* ``first_frame_s``: from asking for a session (default portrait) until its first frame
  leaves, driving frames arriving at ``--fps`` from the moment the session is open;
* for each session count: sessions opened together, driven at ``--fps`` each for ``--seconds``,
  windows of all sessions stepped through ``step_sessions`` (batched UNet calls); with
  ``--queue-depth N`` each turn takes only the newest N frames that are due and drops the older
  ones, as a worker's input buffer does (``flamecast generator --queue``), so a GPU that cannot
  keep up shows as frames dropped at a bounded latency instead of a latency that grows for as
  long as the run lasts (0, the default: every frame is rendered); output
  frames/s per session over the whole run (``fps``: its time includes the last window's latency,
  so a session that keeps up stays just under the input rate) and from its first frame out to
  its last (``out_fps``: the input rate when it keeps up), latency p50/p95 (a frame's arrival
  to its views out), frames dropped and when (``drops``, ``last_drop_s``: a session's first
  window is slower, and frames dropped only then are a start, not a GPU that cannot keep up),
  and GPU memory allocated per added session; with ``--vary`` each of those sessions has a
  portrait of its own (scikit-image's sample pictures in turn, each at its own size), views of
  its own and random driving motion of its own, as different users' sessions would;
* with ``--stage-windows N``: per batch size of ``--stage-batches``, N batched windows back to
  back with every stage timed (where a batched window's time goes, and how it grows with the
  sessions in it);
* ``compile``: graphs compiled and CUDA graphs recorded after warm-up; the run fails (exit 1)
  when either is not zero;
* ``gc_freeze``: the objects frozen after warm-up, as a worker freezes them, and how long the
  full collection before it took (``--no-gc-freeze``: none frozen), and for each session count,
  ``gc``: the garbage collections while it ran (full ones, the longest pause of any, all pauses
  together; ``renderer/worker/heap.py``) and ``gc_full_at``: each full one's start, in seconds on
  the clock of that count's ``drops``, and its length in ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any

from flamecast.cli.bench import percentile

T_START = time.time()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="live",
                    help="a profile, with option overrides after colons as sessions ask for them (live:steps=2)")
    ap.add_argument("--sessions", default="1,2,4,8", help="concurrent session counts, in order (\"\": none)")
    ap.add_argument("--seconds", default="10",
                    help="driving time per session count: one value for all, or one per count (180,20,20,20)")
    ap.add_argument("--fps", type=float, default=30.0, help="driving frames per second per session")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", default="reduce-overhead")
    ap.add_argument("--max-batch", type=int, default=4, help="sessions per batched UNet call")
    ap.add_argument("--allow-random-weights", action="store_true")
    ap.add_argument("--weights-dir")
    ap.add_argument("--deadline", type=float, default=0, help="stop starting new passes after this many seconds")
    ap.add_argument("--inline-conditions", action="store_true",
                    help="draw FLAME renderings in line, between windows, instead of on the conditioning stage "
                    "(renderer/flame2video/conditioning.py): what the stage buys")
    ap.add_argument("--narrow-widths", action="store_true",
                    help="the real model's layout (every block, layer and attention of the SD1.5 UNet and its motion "
                    "and view modules) at narrow widths, with the tiny VAE and image encoder: what compiling and a "
                    "warm start cost for the real graph on a machine without the compute for it (a CPU); the "
                    "frames and their timings mean nothing")
    ap.add_argument("--queue-depth", type=int, default=0,
                    help="frames a session buffers, newest wins, as a worker's --queue: a turn renders at most this "
                    "many and drops older ones (0: every frame is rendered, however late)")
    ap.add_argument("--stage-windows", type=int, default=0,
                    help="after the session counts, this many windows back to back with each stage timed: where a "
                    "window's time goes (ms per window)")
    ap.add_argument("--stage-batches", default="1",
                    help="sessions per batched window for --stage-windows, e.g. 1,2,4 (each at most --max-batch)")
    ap.add_argument("--vary", action="store_true",
                    help="each session of the session counts gets a portrait of its own, views of its own and random "
                    "driving motion of its own (pose, expression, eyelids, translation), as different users' sessions "
                    "do; without it every session has the default portrait, the profile's views and one head turn")
    ap.add_argument("--no-gc-freeze", action="store_true",
                    help="leave the objects warm-up made to Python's garbage collector, as `flamecast generator "
                    "--no-gc-freeze` does (by default they are frozen after warm-up, as a worker does)")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)
    if any(int(b) > args.max_batch for b in args.stage_batches.split(",") if b.strip()):
        ap.error(f"--stage-batches {args.stage_batches}: each batch at most --max-batch ({args.max_batch})")
    return args


def narrow_sd15(widths: tuple[int, ...] = (64, 128, 256, 256)):
    """``sd15_config()``'s UNet and motion/view layout at ``widths`` (divisible by its 32 norm
    groups), with the tiny configuration's VAE, TAESD and image encoder."""
    from flamecast.renderer.flame2video.config import ModelConfig, sd15_config, tiny_config

    real, tiny = sd15_config(), tiny_config()
    unet = dict(real.unet, block_out_channels=list(widths), cross_attention_dim=tiny.image_encoder["projection_dim"])
    return ModelConfig(name=real.name, unet=unet, motion=dict(real.motion, block_out_channels=list(widths)),
                       vae=tiny.vae, tiny_vae=tiny.tiny_vae, image_encoder=tiny.image_encoder,
                       flame_encoder=dict(tiny.flame_encoder, out_channels=widths[0]))


#: scikit-image's sample pictures a varied session's portrait is taken from, in turn: 512x512,
#: 512x512 (grey), 451x300, 600x400 and 640x427 pixels, a face or none (the bench's generator
#: centre-crops)
SAMPLE_PICTURES = ("astronaut", "camera", "chelsea", "coffee", "rocket")
#: view ids a varied session's views are taken from, in turn
VIEW_POOL = ("front", "left30", "right30", "up15", "left15", "right15", "down10", "left45", "right45", "right45up15")


@functools.cache
def sample_png(name: str) -> bytes:
    """scikit-image's sample picture ``name`` in colour, encoded as a client sends a portrait
    (read and encoded once a run, however many sessions use it)."""
    import numpy as np
    from skimage import data

    from flamecast.renderer.portrait import encode_png

    image = getattr(data, name)()
    return encode_png(np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3])


def varied_spec(i: int, options, n_views: int):
    """Session ``i``'s portrait (encoded, as a client sends it) and options: a sample picture of
    its own and ``n_views`` views of its own, both taken in turn."""
    views = tuple(VIEW_POOL[(i * n_views + k) % len(VIEW_POOL)] for k in range(n_views))
    return sample_png(SAMPLE_PICTURES[i % len(SAMPLE_PICTURES)]), options.model_copy(update={"seed": i, "views": views})


def gpu_gb(torch) -> float | None:
    return torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else None


def drive(gen, sessions, fps: float, seconds: float, start_seq: int, depth: int = 0,
          motion=None) -> list[dict[str, Any]]:
    """Feed every session one frame per 1/fps (all frames that are due, if behind; with ``depth``,
    only the newest ``depth`` of them, the older ones dropped) through ``step_sessions``; per
    session: output frames/s, latency from a frame's due time, frames dropped and when (``drops``:
    seconds from the start and frames dropped, one pair per turn that dropped any).

    ``motion(i, n, start)``: session ``i``'s ``n`` frames from ``start``; default one head turn
    for all of them."""
    from flamecast.renderer.flame2video.generator import warm_frames

    n_expr, n = gen.head.n_expression, int(seconds * fps)
    lat: list[list[float]] = [[] for _ in sessions]
    outs_at: list[list[tuple[float, int]]] = [[] for _ in sessions]  # (time, frames) of each output
    t0, fed, dropped = time.perf_counter(), 0, 0
    drops: list[tuple[float, int]] = []
    while fed < n:
        due = min(n, int((time.perf_counter() - t0) * fps) + 1)
        if due <= fed:
            time.sleep(max(0.0, t0 + fed / fps - time.perf_counter()))
            continue
        first = max(fed, due - depth) if depth > 0 else fed
        dropped += first - fed
        if first > fed:
            drops.append((round(time.perf_counter() - t0, 3), first - fed))
        if motion is None:  # one head turn, made once a turn and handed to every session
            frames = warm_frames(due - first, n_expr, start_seq + first)
            work = [(s, frames) for s in sessions]
        else:
            work = [(s, motion(i, due - first, start_seq + first)) for i, s in enumerate(sessions)]
        outs = gen.step_sessions(work)
        now = time.perf_counter()
        for i, out in enumerate(outs):
            lat[i] += [1e3 * (now - (t0 + (r.source.seq - start_seq) / fps)) for r in out]
            if out:
                outs_at[i].append((now, len(out)))
        fed = due
    dt = time.perf_counter() - t0
    return [{"frames_in": n, "frames_dropped": dropped, "drops": drops, "frames_out": len(ms), "fps": len(ms) / dt,
             "out_fps": output_rate(at), "p50_ms": percentile(ms, 0.5), "p95_ms": percentile(ms, 0.95),
             "max_ms": max(ms) if ms else None}
            for ms, at in zip(lat, outs_at)]


def output_rate(outputs: list[tuple[float, int]]) -> float | None:
    """Frames per second from the first output to the last (the first output's frames not
    counted): what a session delivered once running, without the latency that ``fps``, frames
    over the whole run, includes. A session that keeps up with its input gives the input rate."""
    if len(outputs) < 2:
        return None
    span = outputs[-1][0] - outputs[0][0]
    return sum(k for _, k in outputs[1:]) / span if span > 0 else None


def stage_windows(gen, options, windows: int, batch: int = 1) -> dict[str, Any]:
    """``batch`` sessions' windows, batched, back to back with every stage timed (the GPU
    synchronised around each, which lengthens a window a little): where a batched window's time
    goes, in ms per batched window."""
    from flamecast.plugins import GeneratorSessionSpec
    from flamecast.renderer.flame2video.generator import warm_frames

    sessions = [gen.open_session(GeneratorSessionSpec(f"stages{i}", None, options.model_copy(update={"seed": i})))
                for i in range(batch)]
    stream = sessions[0].stream
    try:
        first = warm_frames(stream.window, gen.head.n_expression)  # the first windows, eagerly
        gen.step_sessions([(s, first) for s in sessions])
        sessions[0].enable_stage_timing()
        for w in range(windows):
            frames = warm_frames(stream.stride, gen.head.n_expression, stream.window + w * stream.stride)
            gen.step_sessions([(s, frames) for s in sessions])
        times = sessions[0].stage_times()
        sessions[0].enable_stage_timing(False)
    finally:
        for s in sessions:
            s.close()
    return {name: round(t["total_s"] * 1e3 / windows, 2) for name, t in times.items()}


def first_frame(gen, options, fps: float) -> dict[str, float]:
    """Open a session and drive it in real time until its first frame is out."""
    from flamecast.plugins import GeneratorSessionSpec
    from flamecast.renderer.flame2video.generator import warm_frames

    t0 = time.perf_counter()
    session = gen.open_session(GeneratorSessionSpec("first", None, options))
    opened = time.perf_counter()
    i = 0
    while True:
        time.sleep(max(0.0, opened + i / fps - time.perf_counter()))
        if session.step(warm_frames(1, gen.head.n_expression, i)):
            break
        i += 1
    done = time.perf_counter()
    session.close()
    return {"open_s": opened - t0, "first_frame_s": done - t0, "first_frame_after_open_s": done - opened}


def seconds_per_count(seconds: str, counts: list[int]) -> list[float]:
    """``--seconds`` for each session count: one value for all of them, or one each."""
    values = [float(x) for x in seconds.split(",") if x.strip()]
    if len(values) == 1:
        return values * len(counts)
    if len(values) != len(counts):
        raise SystemExit(f"--seconds has {len(values)} values for {len(counts)} session counts: give one, or one per count")
    return values


def concurrent(gen, options, runs: list[tuple[int, float]], args, report: dict, write, timer) -> None:
    """``runs``: (concurrent sessions, seconds of driving) in order; ``timer``, a started
    ``heap.CollectionTimer``, gives each count's garbage-collection pauses."""
    import numpy as np
    import torch

    from flamecast.plugins import GeneratorSessionSpec
    from flamecast.renderer.flame2video.generator import random_frames, resolve_profile

    opened, n_views = 0, resolve_profile(options).views  # varied sessions opened so far
    for k, seconds in runs:
        if args.deadline and time.time() - T_START > args.deadline:
            report["skipped"] = report.get("skipped", []) + [k]
            continue
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        base = gpu_gb(torch)
        if args.vary:  # each session its own portrait, views and motion; other ones each pass
            specs = [varied_spec(opened + i, options, n_views) for i in range(k)]
            sessions = [gen.open_session(GeneratorSessionSpec(f"s{i}", portrait, opts)) for i, (portrait, opts) in enumerate(specs)]
            rngs = [np.random.default_rng(opened + i) for i in range(k)]
            motion = lambda i, n, start: random_frames(rngs[i], n, gen.head.n_expression, start, extras=i % 2 == 1)  # noqa: E731
            opened += k
        else:
            sessions = [gen.open_session(GeneratorSessionSpec(f"s{i}", None, options.model_copy(update={"seed": i})))
                        for i in range(k)]
            motion = None
        timer.reset()
        started = time.perf_counter()  # drive's own clock starts within microseconds of it
        per = drive(gen, sessions, args.fps, seconds, 0, args.queue_depth, motion)
        pauses, full_at = timer.summary(), timer.full_since(started)
        mem = gpu_gb(torch)
        for s in sessions:
            s.close()
        rates = [p["out_fps"] for p in per if p["out_fps"] is not None]
        compiled = gen.compile_report()
        row = {"sessions": k, "seconds": seconds, "per_session": per, "min_fps": min(p["fps"] for p in per),
               "min_out_fps": min(rates) if rates else None,
               "worst_p95_ms": max(p["p95_ms"] or 0 for p in per), "frames_dropped": per[0]["frames_dropped"],
               "varied": args.vary,
               "last_drop_s": per[0]["drops"][-1][0] if per[0]["drops"] else None,
               "gpu_gb_per_session": None if base is None else (mem - base) / k,
               # so far, kept with each row: a run stopped part-way still says what it compiled
               "compile_since_warm_up": {key: compiled.get(key) for key in ("recompiles", "cudagraph_rerecords")},
               "gc": pauses, "gc_full_at": full_at}
        report["concurrent"].append(row)
        print(f"{k} sessions: min {row['min_fps']:.1f} frames/s per session ({row['min_out_fps'] or 0:.2f} from the "
              f"first frame out to the last), worst p95 {row['worst_p95_ms']:.0f} ms, "
              f"{row['frames_dropped']} of {per[0]['frames_in']} frames dropped"
              + (f" (the last {row['last_drop_s']:.1f} s in), " if row["last_drop_s"] is not None else ", ")
              + f"{row['gpu_gb_per_session'] or 0:.2f} GB per session; garbage collection: "
              + f"{pauses['gc_full_collections']} full"
              + "".join(f" ({ms:.0f} ms at {at:.1f} s)" for at, ms in full_at)
              + f", longest pause {pauses['gc_longest_ms']:.0f} ms; since warm-up: "
              + ", ".join(f"{v} {k}" for k, v in row["compile_since_warm_up"].items()), flush=True)
        write()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = float(os.environ.get("T0") or T_START)
    counts = [int(x) for x in args.sessions.split(",") if x.strip()]
    # a mismatch stops the run here, before the worker starts
    runs = list(zip(counts, seconds_per_count(args.seconds, counts)))
    import torch

    from flamecast.renderer.flame2video import FLAME2VideoGenerator
    from flamecast.renderer.flame2video.generator import resolve_profile, warm_options
    from flamecast.renderer.worker import heap

    report: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "torch": torch.__version__, "queue_depth": args.queue_depth, "concurrent": []}
    if torch.cuda.is_available():
        report["device"] = torch.cuda.get_device_name()

    def write() -> None:
        if args.json_out:
            with open(args.json_out, "w") as fh:
                json.dump(report, fh, indent=2, default=str)

    if args.narrow_widths:
        from flamecast.renderer.flame2video import config

        config.MODEL_CONFIGS["sd15"] = narrow_sd15
        report["model"] = "sd15 layout at narrow widths (--narrow-widths)"
    settings = {"device": args.device, "compile": args.compile or None, "allow_random_weights": args.allow_random_weights,
                "weights_dir": args.weights_dir, "detect_face": False, "warm_profiles": args.profile,
                "max_batch": args.max_batch, "compile_cache_dir": os.environ.get("FLAMECAST_COMPILE_CACHE")}
    gen = FLAME2VideoGenerator(settings)
    gen.draw_ahead = not args.inline_conditions
    report["conditioning"] = "inline" if args.inline_conditions else "stage"
    gen.warm_up()
    if not args.no_gc_freeze:  # as a worker does once warm-up is done (flamecast generator), before it is ready
        frozen = heap.freeze()
        report["gc_freeze"] = {"objects": frozen.objects, "collect_ms": frozen.collect_ms}
        print(f"froze {frozen.objects} objects after warm-up (a full collection of them took {frozen.collect_ms:.0f} ms)",
              flush=True)
    report.update(ready_s=time.time() - t0, warm_up_s=gen.warm_up_s, compile_at_warm_up=gen.compile_report())
    print(f"ready after {report['ready_s']:.1f} s (warm-up {gen.warm_up_s:.1f} s: "
          + "; ".join(f"{name} " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
                      for name, parts in gen.warm_up_parts.items()) + ")", flush=True)
    for name, parts in gen.build_parts.items():
        print(f"{name} build: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()), flush=True)
    phases = report["compile_at_warm_up"].get("compile_phases_s") or {}
    if phases:
        print("compile time by phase (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()), flush=True)
    for profile, calls in (report["compile_at_warm_up"].get("precompiled") or {}).items():
        print(f"{profile} compiled calls: " + "; ".join(
            f"{name} {c['loaded']} loaded ({c['load_s']:.1f} s), {c['compiled']} compiled ({c['compile_s']:.1f} s)"
            + (f", {c['in_process']} for this process only" if c.get("in_process") else "")
            for name, c in calls.items()), flush=True)
    write()
    options = warm_options(args.profile)
    report["profile"] = {"spec": args.profile, **dataclasses.asdict(resolve_profile(options))}
    report["first_frame"] = first_frame(gen, options, args.fps)
    print("first frame: " + ", ".join(f"{k} {v:.2f}" for k, v in report["first_frame"].items()), flush=True)
    write()
    timer = heap.CollectionTimer().start()
    try:
        concurrent(gen, options, runs, args, report, write, timer)
    finally:
        timer.stop()
    if args.stage_windows:
        for batch in [int(x) for x in args.stage_batches.split(",") if x.strip()]:
            times = stage_windows(gen, options, args.stage_windows, batch)
            if batch == 1:
                report["stage_ms_per_window"] = times
            report.setdefault("stage_ms_per_batched_window", {})[str(batch)] = times
            print(f"per window of {batch} session(s) (ms, stages timed): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()),
                  flush=True)
            write()
    report["compile"] = gen.compile_report()
    write()
    bad = report["compile"].get("recompiles", 0) or report["compile"].get("cudagraph_rerecords", 0)
    print(f"after warm-up: {report['compile'].get('recompiles')} recompiles, "
          f"{report['compile'].get('cudagraph_rerecords')} CUDA-graph recordings", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
