"""Audio/video offset at a receiving client, and its drift over a long run.

    python bench/av_sync.py --driver clapper --minutes 10 --json av_sync.json
    python bench/av_sync.py --driver microphone --minutes 1

A server (in this process) with a generator worker process runs one session; an aiortc client
receives its front view and its audio track. Every ``--every`` seconds there is an event:

* ``clapper`` (the transport): a driver that, in one frame, opens the jaw wide and passes a beep
  through, stamped like the microphone driver stamps its audio: a beep and a mouth-open event
  in the same instant. This measures what the server and WebRTC do to sync.
* ``microphone`` (the whole path): the microphone layer hears an "ah" that espeak-ng speaks,
  pushed over ``/api/sessions/ID/audio`` in real time (``FlamecastClient.push_audio``); the
  mouth opens when the model says so, which adds the model's own timing to the transport's.

In the audio the client finds each sound onset (the first sample above -30 dBFS after half a
second of quiet); in the video, each mouth opening (the mouth region's change from the closed
mouth crossing half of its typical peak). The offset of an event is video onset minus audio
onset, both on the client's clock as frames arrive (positive: the picture is late). Reported:
median and 95th-percentile absolute offset over the first and the last minute, and the drift
(slope of the offset over time, in ms per 10 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

QUIET_S = 0.5


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--driver", choices=("clapper", "microphone"), default="clapper",
                   help="what makes the events (default clapper: beep and mouth-open in one frame)")
    p.add_argument("--minutes", type=float, default=1.0, help="how long to measure (default 1)")
    p.add_argument("--every", type=float, default=2.0, help="seconds between sound events (default 2)")
    p.add_argument("--generator", default="portrait", help="generator of the server (default portrait)")
    p.add_argument("--size", type=int, default=192, help="video side (default 192)")
    p.add_argument("--json", help="write the result here")
    return p.parse_args(argv)


def speech_events(every: float, n: int, rate: int = 16000) -> tuple[np.ndarray, list[float]]:
    """n events of espeak-ng's "ah", ``every`` seconds apart, as int16 mono at ``rate``; and their
    onset times (seconds, first sample above -30 dBFS)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "ah.wav"
        subprocess.run(["espeak-ng", "-s", "120", "-w", str(wav), "ah"], check=True, capture_output=True)
        import av

        with av.open(str(wav)) as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                                  for f in resampler.resample(frame)])
    loud = np.nonzero(np.abs(pcm) > 32768 * 10 ** (-30 / 20))[0]
    ah = pcm[loud[0]: loud[-1] + 1]
    period = int(every * rate)
    out = np.zeros(period * n + rate, np.int16)
    onsets = []
    for i in range(n):
        start = rate + i * period
        out[start: start + ah.size] = ah[: period]
        onsets.append(start / rate)
    return out, onsets


class Clapper:
    """Builds the clapper driver class (flamecast.plugins is imported lazily, as in a plugin)."""

    @staticmethod
    def driver(every: float):
        from flamecast.plugins import Driver, FlameFrame, pose_slice
        from flamecast.plugins.protocol import AudioChunk

        class ClapperDriver(Driver):
            """Every ``every`` seconds: the jaw opens and a 1 kHz beep starts in the same frame;
            both last 0.3 s. Silence is passed through between beeps, as a microphone would."""

            name = "clapper"
            provides_audio = True

            async def frames(self):
                rate, per_frame = 48000, 48000 // 25
                period, seq, i = int(every * 25), 0, 0
                while True:
                    on = 25 <= i % period < 25 + 8  # the first event after a second
                    k = np.arange(per_frame) + i * per_frame
                    pcm = (12000 * np.sin(2 * np.pi * 1000 * k / rate)).astype(np.int16) if on \
                        else np.zeros(per_frame, np.int16)
                    now = self.context.clock.now_ns()
                    self.context.emit_audio(AudioChunk(self.context.session_id, seq, now, rate, pcm[:, None]))
                    pose = np.zeros(15, np.float32)
                    pose[pose_slice("jaw").start] = 0.5 if on else 0.0
                    seq, i = seq + 1, i + 1
                    yield FlameFrame(pose=pose, expression=np.zeros(self.context.head.n_expression, np.float32))

        return ClapperDriver

    @staticmethod
    def plugin(every: float):
        from flamecast.plugins import hookimpl

        driver = Clapper.driver(every)

        class Plugin:
            @hookimpl
            def flamecast_register_drivers(self, register):
                register(driver)

        return Plugin()


def server(args: argparse.Namespace):
    """The server in this process with the clapper plugin, and a generator worker process."""
    from flamecast.plugins.manager import make_plugin_host

    from latency import in_process_server  # bench/latency.py, beside this script

    host = make_plugin_host(extra_plugins=[("clapper", Clapper.plugin(args.every))])
    return in_process_server(args, host=host, idle_timeout=3600)


async def receive_audio(conn, until: float, out: list) -> None:
    """(arrival time of the frame's first sample, samples) per audio frame."""
    while time.monotonic() < until:
        try:
            frame = await conn.recv_audio(timeout=max(0.1, min(10.0, until - time.monotonic())))
        except TimeoutError:  # the track is silent between chunks only when no audio comes at all
            if time.monotonic() >= until:
                return
            raise
        t = time.monotonic()
        samples = frame.to_ndarray().reshape(-1).astype(np.float32)
        channels = len(frame.layout.channels)
        mono = samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples
        out.append((t - mono.size / frame.sample_rate, frame.sample_rate, mono))


async def receive_video(conn, until: float, out: list, whole: bool = False) -> None:
    """(arrival time, mouth region as grey float array, or the whole RGB picture) per frame."""
    while time.monotonic() < until:
        frame = await conn.recv("front", timeout=10)
        t = time.monotonic()
        if whole:
            out.append((t, frame.to_ndarray(format="rgb24")))
            continue
        grey = frame.to_ndarray(format="gray").astype(np.float32)
        h, w = grey.shape
        out.append((t, grey[int(0.55 * h): int(0.85 * h), int(0.3 * w): int(0.7 * w)]))


def lip_gaps(frames: list) -> list:
    """(time, FaceMesh inner-lip gap over face height) per whole picture: the mouth opening,
    whatever the head does meanwhile (the microphone's layer leaves the head to idle)."""
    import mediapipe as mp

    out = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1) as mesh:
        for t, rgb in frames:
            found = mesh.process(rgb).multi_face_landmarks
            if not found:
                continue
            p = found[0].landmark
            face = abs(p[152].y - p[10].y) or 1.0
            out.append((t, np.array([[abs(p[14].y - p[13].y) / face]], np.float32)))
    return out


def audio_onsets(frames: list) -> list[float]:
    onsets, quiet_since = [], None
    for t0, rate, mono in frames:
        above = np.nonzero(np.abs(mono) > 32768 * 10 ** (-30 / 20))[0]
        if above.size == 0:
            quiet_since = quiet_since if quiet_since is not None else t0
            continue
        onset = t0 + above[0] / rate
        if quiet_since is not None and onset - quiet_since >= QUIET_S:
            onsets.append(onset)
        quiet_since = None if above[-1] >= mono.size - 1 else t0 + (above[-1] + 1) / rate
    return onsets


def video_onsets(frames: list) -> list[float]:
    times = np.array([t for t, _ in frames])
    ref = np.min(np.stack([m for _, m in frames[:10]]), axis=0) if frames[0][1].size == 1 else \
        np.median(np.stack([m for _, m in frames[:10]]), axis=0)
    signal_ = np.array([np.abs(m - ref).mean() for _, m in frames])
    base = np.percentile(signal_, 20)
    peak = np.percentile(signal_, 99)
    threshold = base + 0.5 * (peak - base)
    onsets, last_below = [], None
    for t, value in zip(times, signal_):
        if value < threshold:
            last_below = last_below if last_below is not None else t
            continue
        if last_below is not None and t - last_below >= QUIET_S:
            onsets.append(float(t))
        last_below = None
    return onsets


def pair(audio: list[float], video: list[float], window: float = 0.5) -> list[tuple[float, float]]:
    """(audio onset, video minus audio) for each audio onset with a video onset within ``window``."""
    out = []
    for a in audio:
        near = [v for v in video if abs(v - a) <= window]
        if near:
            v = min(near, key=lambda v: abs(v - a))
            out.append((a, v - a))
    return out


def summarize(pairs: list[tuple[float, float]], n_events: int) -> dict:
    if not pairs:
        return {"events_sent": n_events, "events_paired": 0}
    t = np.array([a for a, _ in pairs])
    off = np.array([d for _, d in pairs]) * 1000
    t_rel = t - t[0]
    first, last = off[t_rel < 60], off[t_rel >= t_rel[-1] - 60]
    slope = np.polyfit(t_rel, off, 1)[0] if len(off) > 2 else 0.0

    def stats(x):
        return {"events": int(x.size), "median_ms": round(float(np.median(x)), 1),
                "median_abs_ms": round(float(np.median(np.abs(x))), 1),
                "p95_abs_ms": round(float(np.percentile(np.abs(x), 95)), 1)}

    return {"events_sent": n_events, "events_paired": len(pairs), "all": stats(off), "first_minute": stats(first),
            "last_minute": stats(last), "drift_ms_per_10_min": round(float(slope * 600), 1),
            "span_s": round(float(t_rel[-1]), 1)}


async def main(args: argparse.Namespace) -> dict:
    from flamecast.server.api_client import FlamecastClient

    n = max(3, int(args.minutes * 60 / args.every))
    seconds = n * args.every + 1.5
    async with server(args) as url, FlamecastClient(url) as client:
        if args.driver == "clapper":
            info = await client.create_session(views=["front"], driver="clapper")
            pcm = None
        else:
            pcm, _ = speech_events(args.every, n)
            seconds = pcm.size / 16000 + 1.5
            info = await client.create_session(views=["front"], layers=[
                {"driver": "microphone", "options": {"source": "client"}}])
        async with await client.connect(info["id"], tracks=["front"], audio=True) as conn:
            until = time.monotonic() + seconds
            audio, video = [], []
            push = asyncio.ensure_future(client.push_audio(info["id"], pcm, rate=16000)) if pcm is not None else None
            await asyncio.gather(receive_audio(conn, until, audio), receive_video(conn, until, video, whole=pcm is not None))
            if push is not None:
                await push
            stats = (await client.session(info["id"]))["stats"]
    if pcm is None:  # the clapper's events during the reception: one a period, the first after a second
        n = int((seconds - 1.0) / args.every) + 1
    a_on, v_on = audio_onsets(audio), video_onsets(lip_gaps(video) if pcm is not None else video)
    result = summarize(pair(a_on, v_on), n)
    result.update(audio_onsets=len(a_on), video_onsets=len(v_on))
    result.update({"driver": args.driver, "generator": args.generator, "size": args.size, "every_s": args.every,
                   "server_latency_ms": stats.get("latency_ms"), "audio_dropped": stats.get("audio_dropped"),
                   "load_average": [round(x, 1) for x in os.getloadavg()],
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "command": "python bench/av_sync.py " + " ".join(sys.argv[1:])})
    return result


if __name__ == "__main__":
    arguments = parse_args()
    report = asyncio.run(main(arguments))
    text = json.dumps(report, indent=1)
    print(text)
    if arguments.json:
        Path(arguments.json).write_text(text)
