"""Microphone driver speed and latency: CPU per frame, and how far behind the newest sample a frame is.

    taskset -c 0 python bench/microphone_driver.py [--seconds 60] [--json out.json]

Speech: held-out sentences said by a held-out espeak-ng voice (``flamecast eval microphone``'s
material), joined into one signal. Reported separately:

1. first use: loading the model and the first frame;
2. file source, steady state: each frame's CPU time (this thread: decode, resample, features,
   VisemeNet, prosody, the FlameFrame, the passthrough chunk), and its wall time;
3. pushed audio (the browser's or an integrator's path): 20 ms int16 stereo 48 kHz chunks put
   into ``audio_in`` two per frame, CPU time per frame, and the latency of every frame: the audio
   time of the newest sample minus the audio time the frame shows (lookahead + the wait for the
   next feature hop + chunking);
4. the algorithmic latency by construction (the model's config).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np


def _stats(ms) -> dict[str, float]:
    a = np.asarray(ms, float)
    return {"mean": round(float(a.mean()), 3), "p50": round(float(np.percentile(a, 50)), 3),
            "p95": round(float(np.percentile(a, 95)), 3), "max": round(float(a.max()), 3)}


def speech(seconds: float) -> tuple[np.ndarray, int]:
    from flamecast.drivers.microphone import corpus
    from flamecast.drivers.microphone.speech import Speaker, Voice

    speaker, parts, total, i = Speaker(), [], 0.0, 0
    while total < seconds:
        u = speaker.say(corpus.EVAL_SENTENCES[i % len(corpus.EVAL_SENTENCES)], Voice(corpus.EVAL_VOICE_NAMES[i % 6]))
        parts += [u.audio, np.zeros(u.rate // 4, np.float32)]
        total += u.audio.size / u.rate + 0.25
        i += 1
    return np.concatenate(parts), u.rate


async def file_source(path: str, n: int) -> dict:
    from flamecast.drivers.microphone import MicrophoneDriver
    from flamecast.plugins.testing import DriverHarness

    t0 = time.perf_counter()
    harness = DriverHarness(MicrophoneDriver, {"file": path})
    it = harness.driver.frames().__aiter__()
    await it.__anext__()
    first = (time.perf_counter() - t0) * 1e3
    cpu, wall = [], []
    for _ in range(n):
        c, w = time.thread_time(), time.perf_counter()
        try:
            await it.__anext__()
        except StopAsyncIteration:
            break
        cpu.append((time.thread_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
    await harness.close()
    return {"first_use_ms": round(first, 1), "frames": len(cpu), "cpu_ms": _stats(cpu), "wall_ms": _stats(wall)}


async def pushed(audio: np.ndarray, rate: int) -> dict:
    from flamecast.drivers.microphone import MicrophoneDriver
    from flamecast.drivers.microphone.audio import resample_once
    from flamecast.plugins.protocol import AudioChunk
    from flamecast.plugins.testing import DriverHarness

    x = (resample_once(audio, rate, 48000) * 32767).astype(np.int16)
    chunks = [np.repeat(x[i:i + 960, None], 2, axis=1) for i in range(0, x.size - 960, 960)]
    harness = DriverHarness(MicrophoneDriver, {})
    it = harness.driver.frames().__aiter__()
    cpu, latency = [], []
    for k in range(0, len(chunks) - 1, 2):
        c = time.thread_time()
        for j in (k, k + 1):
            harness.context.audio_in.put_nowait(AudioChunk("bench", j, 0, 48000, chunks[j]))
        await it.__anext__()
        cpu.append((time.thread_time() - c) * 1e3)
        tracker = harness.driver.tracker
        if tracker.latest_time_s is not None:
            latency.append((tracker.audio_time_s - tracker.latest_time_s) * 1e3)
        harness.clock.advance(0.04)
    await harness.close()
    return {"frames": len(cpu), "cpu_ms": _stats(cpu[5:]), "latency_ms": _stats(latency[5:])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of speech (default 60)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    import tempfile

    import torch

    from flamecast.drivers.microphone.model import VisemeNet, shipped_weights_dir
    from flamecast.drivers.microphone.speech import write_wav

    torch.set_num_threads(1)
    audio, rate = speech(args.seconds)
    config = VisemeNet.from_pretrained(shipped_weights_dir()).config
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/speech.wav"
        write_wav(path, audio, rate)
        result = {
            "speech_seconds": round(audio.size / rate, 1),
            "algorithmic_latency_ms": {"lookahead": round(config.lookahead_s * 1e3, 1), "worst": round(config.latency_s * 1e3, 1)},
            "file": asyncio.run(file_source(path, int(args.seconds * 25))),
            "pushed_48k_stereo_20ms": asyncio.run(pushed(audio, rate)),
            "torch_threads": torch.get_num_threads(),
        }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
