"""The Python client of a flamecast server's HTTP API: create or join a session, receive its video over
WebRTC (aiortc), send control input, measure glass-to-glass latency.

Example::

    async with FlamecastClient("http://127.0.0.1:8080") as client:
        info = await client.create_session(driver="idle")
        async with await client.connect(info["id"], tracks=["front"]) as conn:
            frame = await conn.recv("front")        # an av.VideoFrame
            await client.send_input(info["id"], kind="interrupt")
        print(conn.latency_ms())                      # capture -> decoded, per frame

Latency: the server stamps pts = capture time after the session's epoch (90 kHz) and sends
``{"type": "frame", "pts", "capture_ns"}`` on the data channel. The receiver's pts count from its
first packet, so the client learns that offset once (the one value every frame agrees on) and
then maps each decoded frame back to its capture time.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

FRAME_MEMORY = 512  # recent (pts -> capture_ns) pairs kept for matching
LOCK_VOTES = 3


class ClientError(RuntimeError):
    """The server answered with an error; ``status`` and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class FlamecastClient:
    """HTTP side: sessions, portraits, input. ``connect`` opens a WebRTC connection."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = aiohttp.ClientSession(headers=headers)

    async def __aenter__(self) -> FlamecastClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        async with self._http.request(method, self.url + path, **kw) as resp:
            body = await resp.read()
            try:
                data = json.loads(body) if body else {}
            except ValueError:
                data = {"error": body.decode("utf-8", "replace")}
            if resp.status >= 400:
                raise ClientError(resp.status, data.get("error", "") if isinstance(data, dict) else str(data))
            return data

    async def create_session(self, *, portrait: bytes | None = None, **fields: Any) -> dict[str, Any]:
        """POST /api/sessions. ``fields``: driver, options (or layers, emotion), generator, views, size,
        profile, portrait_id."""
        if portrait is None:
            return await self._request("POST", "/api/sessions", json=fields)
        form = aiohttp.FormData()
        form.add_field("portrait", portrait, filename="portrait", content_type="application/octet-stream")
        for key, value in fields.items():
            form.add_field(key, json.dumps(value) if isinstance(value, (dict, list)) and key != "views"
                           else ",".join(value) if key == "views" else str(value))
        return await self._request("POST", "/api/sessions", data=form)

    async def upload_portrait(self, data: bytes) -> dict[str, Any]:
        return await self._request("POST", "/api/portraits", data=data)

    async def session(self, session_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/api/sessions/{session_id}")

    async def sessions(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "/api/sessions"))["sessions"]

    async def delete_session(self, session_id: str) -> dict[str, Any]:
        return await self._request("DELETE", f"/api/sessions/{session_id}")

    async def send_input(self, session_id: str, **message: Any) -> dict[str, Any]:
        return await self._request("POST", f"/api/sessions/{session_id}/input", json=message)

    async def push_audio(self, session_id: str, pcm, *, rate: int = 16000, channels: int = 1,
                         encoding: str = "s16le", chunk_ms: float = 20.0, realtime: bool = True) -> int:
        """Stream PCM to the session's audio layers over ``/api/sessions/ID/audio``, as a TTS engine
        or a telephony bridge would. ``pcm`` is bytes (raw, in ``encoding``) or an int16/float32
        numpy array (samples[, channels]); it is sent in ``chunk_ms`` pieces, paced in real time
        unless ``realtime`` is False. Returns the bytes sent."""
        import numpy as np

        if not isinstance(pcm, (bytes, bytearray)):
            array = np.asarray(pcm)
            encoding = "f32le" if array.dtype.kind == "f" else "s16le"
            pcm = array.astype("<f4" if encoding == "f32le" else "<i2").tobytes()
        width = {"s16le": 2, "f32le": 4, "u8": 1, "mulaw": 1}[encoding] * channels
        step = max(width, int(rate * chunk_ms / 1000) * width)
        query = {"rate": str(rate), "channels": str(channels), "encoding": encoding}
        path = f"/api/sessions/{session_id}/audio"
        try:
            ws = await self._http.ws_connect(self.url + path, params=query)
        except aiohttp.WSServerHandshakeError as exc:
            await self._request("GET", path, params=query)  # the same checks answer as plain HTTP, with the reason
            raise ClientError(exc.status, exc.message) from None
        async with ws:
            ready = await ws.receive_json(timeout=10)
            if ready.get("type") != "ready":
                raise ClientError(400, str(ready))
            start = time.monotonic()
            for i, offset in enumerate(range(0, len(pcm), step)):
                await ws.send_bytes(bytes(pcm[offset:offset + step]))
                if realtime:
                    await asyncio.sleep(max(0.0, start + (i + 1) * chunk_ms / 1000 - time.monotonic()))
        return len(pcm)

    async def layers(self, session_id: str) -> dict[str, Any]:
        """GET /api/sessions/ID/layers: the layers bottom first and which owns each channel group."""
        return await self._request("GET", f"/api/sessions/{session_id}/layers")

    async def add_layer(self, session_id: str, driver: str, **fields: Any) -> dict[str, Any]:
        """Add a driver layer; ``fields``: options, channels, name, index, muted."""
        return await self._request("POST", f"/api/sessions/{session_id}/layers", json={"driver": driver, **fields})

    async def update_layer(self, session_id: str, name: str, *, index: int | None = None,
                           muted: bool | None = None) -> dict[str, Any]:
        """Move (``index``, 1 = just above the base) and/or mute a layer."""
        body = {k: v for k, v in (("index", index), ("muted", muted)) if v is not None}
        return await self._request("PATCH", f"/api/sessions/{session_id}/layers/{name}", json=body)

    async def remove_layer(self, session_id: str, name: str) -> dict[str, Any]:
        return await self._request("DELETE", f"/api/sessions/{session_id}/layers/{name}")

    async def connect(self, session_id: str, *, tracks: list[str] | None = None, codec: str | None = None,
                      send: list | None = None, audio: bool = False) -> Connection:
        """Open a WebRTC connection receiving ``tracks`` (default: every view), the session's
        audio when ``audio`` (track name "audio"), and sending the aiortc tracks in ``send``
        (microphone / camera input for drivers that need them)."""
        if tracks is None:
            tracks = (await self.session(session_id))["views"]
        conn = Connection(tracks, send=send, audio=audio)
        try:
            offer = await conn.make_offer()
            body = {"sdp": offer.sdp, "type": offer.type, "tracks": tracks}
            if codec:
                body["codec"] = codec
            answer = await self._request("POST", f"/api/sessions/{session_id}/offer", json=body)
            await conn.accept(answer)
        except BaseException:
            await conn.close()
            raise
        return conn


class LatencyMatcher:
    """Maps decoded pts (relative to the first received packet) to capture times."""

    def __init__(self) -> None:
        self.sent: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.offset: int | None = None
        self._votes: collections.Counter[int] = collections.Counter()
        self._early: collections.OrderedDict[int, int] = collections.OrderedDict()  # decoded before its stamp came
        self.samples: list[float] = []

    def on_sent(self, pts: int, capture_ns: int) -> None:
        self.sent[pts] = capture_ns
        _trim(self.sent)
        if self.offset is not None:
            for candidate in (pts - self.offset, pts - self.offset - 1, pts - self.offset + 1):
                if (decoded_ns := self._early.pop(candidate, None)) is not None:
                    self.samples.append((decoded_ns - capture_ns) / 1e6)
                    break

    def on_decoded(self, pts: int, now_ns: int) -> float | None:
        """Latency in ms of a frame decoded now, once the offset is known (None until then, or
        until the frame's stamp arrives: the data channel may lag the video)."""
        if self.offset is None:
            self._vote(pts)
            return None
        capture = self._lookup(pts + self.offset)
        if capture is None:
            self._early[pts] = now_ns
            _trim(self._early)
            return None
        ms = (now_ns - capture) / 1e6
        self.samples.append(ms)
        return ms

    def _lookup(self, sent_pts: int) -> int | None:
        # The decoder's pts can be one tick off the sent one (timebase rounding on the way).
        for candidate in (sent_pts, sent_pts - 1, sent_pts + 1):
            if candidate in self.sent:
                return self.sent[candidate]
        return None

    def _vote(self, pts: int) -> None:
        for sent_pts in self.sent:
            self._votes[sent_pts - pts] += 1
        if self._votes:
            (best, n), *rest = self._votes.most_common(2) + [(None, 0)]
            if n >= LOCK_VOTES and n > rest[0][1]:
                self.offset = best


def _trim(d: collections.OrderedDict) -> None:
    while len(d) > FRAME_MEMORY:
        d.popitem(last=False)


class Connection:
    """One peer connection receiving some of a session's tracks (and its data channel)."""

    def __init__(self, tracks: list[str], send: list | None = None, audio: bool = False) -> None:
        self.names = list(tracks)
        self.pc = RTCPeerConnection()
        self.tracks: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.matchers = {name: LatencyMatcher() for name in self.names}
        self.received = collections.Counter()
        self.channel = self.pc.createDataChannel("flamecast")
        self.channel.on("message", self._on_message)
        self._transceivers = [self.pc.addTransceiver("video", direction="recvonly") for _ in self.names]
        self._audio = self.pc.addTransceiver("audio", direction="recvonly") if audio else None
        for track in send or ():
            self.pc.addTransceiver(track, direction="sendonly")
        self.answer: dict[str, Any] = {}

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def make_offer(self) -> RTCSessionDescription:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription

    async def accept(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        for name, transceiver in zip(self.names, self._transceivers):
            self.tracks[name] = transceiver.receiver.track
        if self._audio is not None:
            self.tracks["audio"] = self._audio.receiver.track

    async def recv_audio(self, timeout: float = 10.0):
        """The next decoded audio frame (av.AudioFrame) of the session's audio track."""
        async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancellation
            return await self.tracks["audio"].recv()

    def _on_message(self, message: Any) -> None:
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            return
        if data.get("type") == "frame":
            for matcher in self.matchers.values():
                matcher.on_sent(int(data["pts"]), int(data["capture_ns"]))
        else:
            self.events.append(data)

    def send_control(self, **message: Any) -> None:
        """A control message over the data channel (the reply arrives in ``events``)."""
        self.channel.send(json.dumps(message))

    async def recv(self, name: str, timeout: float = 10.0):
        """The next decoded frame (av.VideoFrame) of track ``name``."""
        async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancellation
            frame = await self.tracks[name].recv()
        self.received[name] += 1
        ms = self.matchers[name].on_decoded(int(frame.pts), time.time_ns())
        if ms is not None and self.channel.readyState == "open" and len(self.matchers[name].samples) % 25 == 0:
            self.channel.send(json.dumps({"type": "latency", "ms": self.matchers[name].samples[-25:]}))
        return frame

    def latency_ms(self, name: str | None = None) -> list[float]:
        names = [name] if name else self.names
        return [ms for n in names for ms in self.matchers[n].samples]

    async def close(self) -> None:
        for track in self.tracks.values():
            track.stop()
        await self.pc.close()


async def drain(conn: Connection, name: str, n: int, timeout: float = 30.0) -> list:
    """Receive ``n`` frames of one track (raises TimeoutError / MediaStreamError)."""
    frames = []
    async with asyncio.timeout(timeout):
        while len(frames) < n:
            frames.append(await conn.recv(name))
    return frames


__all__ = ["ClientError", "Connection", "FlamecastClient", "LatencyMatcher", "MediaStreamError", "drain"]
