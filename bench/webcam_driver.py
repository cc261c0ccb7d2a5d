"""Webcam driver speed: tracking cost per 640x480 frame and camera-frame-to-FlameFrame latency.

    taskset -c 0 python bench/webcam_driver.py [--frames 300] [--json out.json]

``taskset -c 0`` keeps everything (mediapipe's own threads included) on one core. Frames: the
astronaut photograph moved and rotated in a 640x480 frame (``flamecast eval webcam``'s photo
sequence). Reported separately:

1. first use (FaceMesh graph and head geometry loading, the first frame);
2. steady-state tracking per frame: FaceMesh, the fit, the whole ``FaceTracker.process``;
   frames per second = 1000 / mean;
3. latency in real time: frames put into the driver's video queue at 30 fps on the real clock;
   for each FlameFrame the driver yields, the time since the capture of the frame it tracked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def tracking(frames: list[np.ndarray]) -> dict:
    from flamecast.drivers.webcam.options import WebcamOptions
    from flamecast.drivers.webcam.tracker import FaceTracker
    from flamecast.plugins import builtin_head_space

    t0 = time.perf_counter()
    tracker = FaceTracker(WebcamOptions(), builtin_head_space())
    tracker.process(frames[0])
    first = (time.perf_counter() - t0) * 1e3
    for image in frames[1:11]:
        tracker.process(image)  # identity frames and warm-up
    mesh_ms, fit_ms, total_ms = [], [], []
    for image in frames:
        a = time.perf_counter()
        points = tracker.detect(image)
        b = time.perf_counter()
        if points is not None:
            tracker.fitter.fit(points)
        c = time.perf_counter()
        tracker.process(image)
        d = time.perf_counter()
        mesh_ms.append((b - a) * 1e3)
        fit_ms.append((c - b) * 1e3)
        total_ms.append((d - c) * 1e3)
    tracker.close()
    total = _percentiles(total_ms)
    return {"first_use_ms": first, "facemesh_ms": _percentiles(mesh_ms), "fit_ms": _percentiles(fit_ms),
            "process_ms": total, "frames_per_second": 1000.0 / total["mean"]}


async def _latency(frames: list[np.ndarray], fps: float) -> dict:
    from flamecast.drivers.webcam import WebcamDriver
    from flamecast.plugins import DriverContext

    queue: asyncio.Queue = asyncio.Queue(maxsize=4)
    options = WebcamDriver.parse_options({"source": "browser", "fps": fps})
    driver = WebcamDriver(options, DriverContext(rate=fps, video_in=queue))

    async def camera():
        start = time.monotonic()
        for i, image in enumerate(frames):
            await asyncio.sleep(max(0.0, start + i / fps - time.monotonic()))
            if queue.full():
                queue.get_nowait()
            queue.put_nowait((image, time.time_ns()))

    feeder = asyncio.create_task(camera())
    latencies, seen = [], set()
    async for _ in driver.frames():
        now = time.time_ns()
        cap = driver.last_capture_ns
        if cap and cap not in seen:
            seen.add(cap)
            latencies.append((now - cap) / 1e6)
        if feeder.done() and queue.empty():
            break
    await driver.aclose()
    return {"frames": len(latencies), "latency_ms": _percentiles(latencies[10:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from flamecast.drivers.webcam.evaluate import photo_sequence

    frames, _ = photo_sequence(args.frames, size=(640, 480))
    out = {"input": "640x480", "tracking": tracking(frames)}
    out["realtime"] = asyncio.run(_latency(frames, args.fps))
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
