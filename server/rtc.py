"""WebRTC viewers: one RTCPeerConnection per offer, carrying the tracks the client asked for.

* The client's offer holds one receiving video transceiver per requested track, in order;
  tracks the client sends (browser microphone / camera) go to the session's driver when it
  declared ``needs_audio`` / ``needs_video``, and are read and discarded otherwise.
* A data channel the client opens receives ``{"type": "frame", "seq", "capture_ns", "pts"}``
  for each driving frame sent and the session's events; the client may send
  ``{"type": "latency", "ms": [...]}`` (glass-to-glass samples it measured) and control
  messages (the bodies of POST /input), each answered with ``{"type": "reply", "status", ...}``.
* A viewer needs only what ``ViewerSession`` names from its session; the session publishes
  events and sent frames to its viewers through ``on_event`` / ``on_frame_sent``.
* A viewer is closed when its connection fails or closes, or when no RTCP receiver report has
  come for ``viewer_timeout`` seconds (a client that vanished without a goodbye).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from flamecast.plugins.protocol import AudioChunk

from . import security
from .control import ControlError, ControlReply

log = logging.getLogger(__name__)

CODECS = {"vp8": "video/VP8", "h264": "video/H264"}
LIVENESS_INTERVAL = 1.0
MAX_CHANNEL_BUFFER = 256 * 1024
MAX_CHANNEL_MESSAGE = 64 * 1024
MAX_SDP_BYTES = 64 * 1024
CLOSE_TIMEOUT = 5.0
MAX_TRACKS = 16
CONNECT_TIMEOUT = 5.0  # seconds an answered offer may take to connect before its slot is freed


class OfferError(ValueError):
    """An offer that cannot be answered; the message says why (-> 400)."""


@dataclass(frozen=True)
class OfferRequest:
    sdp: str
    type: str
    tracks: tuple[str, ...]
    codec: str | None
    audio: bool = False  # the offer can receive audio: attach the session's audio track


def parse_offer(body: Any, available: tuple[str, ...]) -> OfferRequest:
    """Validate the JSON body of POST /offer: {"sdp", "type": "offer", "tracks"?, "codec"?}."""
    if not isinstance(body, dict):
        raise OfferError("the body must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}")
    sdp, kind = body.get("sdp"), body.get("type", "offer")
    if not isinstance(sdp, str) or not sdp.strip():
        raise OfferError("field 'sdp' (string) is required: the SDP of an RTCPeerConnection offer")
    if len(sdp) > MAX_SDP_BYTES:
        raise OfferError(f"the SDP is longer than {MAX_SDP_BYTES} bytes")
    if kind != "offer":
        raise OfferError("field 'type' must be \"offer\"")
    tracks = body.get("tracks", list(available[:-1]))
    if isinstance(tracks, str):
        tracks = [t for t in tracks.split(",") if t]
    if not isinstance(tracks, list) or not tracks or not all(isinstance(t, str) for t in tracks):
        raise OfferError("field 'tracks' must be a non-empty list of track names")
    if len(tracks) > MAX_TRACKS:
        raise OfferError(f"at most {MAX_TRACKS} tracks per connection")
    unknown = [t for t in tracks if t not in available]
    if unknown:
        raise OfferError(f"unknown track(s) {', '.join(unknown)}; this session has: {', '.join(available)}")
    codec = body.get("codec")
    if codec is not None and (not isinstance(codec, str) or codec.lower() not in CODECS):
        raise OfferError(f"field 'codec' must be one of {', '.join(CODECS)}")
    description = _parse_sdp(sdp)
    receiving = [m for m in description.media if m.kind == "video" and m.direction in ("recvonly", "sendrecv")]
    if len(receiving) < len(tracks):
        raise OfferError(
            f"the offer can receive {len(receiving)} video track(s) but {len(tracks)} were requested; add one "
            "recvonly video transceiver per track, before any sending ones"
        )
    audio = any(m.kind == "audio" and m.direction in ("recvonly", "sendrecv") for m in description.media)
    return OfferRequest(sdp, kind, tuple(tracks), codec.lower() if codec else None, audio)


def _parse_sdp(sdp: str) -> SessionDescription:
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("the SDP must start with 'v=0'")
    try:
        return SessionDescription.parse(sdp)
    except Exception as exc:
        raise OfferError(f"the SDP cannot be parsed: {exc.__class__.__name__}: {exc}") from None


class ViewerSession(Protocol):
    """What a viewer needs from the session it watches (``sessions.Session`` is one)."""

    id: str

    @property
    def wants_audio(self) -> bool: ...

    @property
    def wants_video(self) -> bool: ...

    def video_track(self, name: str) -> MediaStreamTrack: ...

    def audio_track(self) -> MediaStreamTrack: ...

    def add_viewer(self, viewer: Viewer) -> None: ...

    def remove_viewer(self, viewer: Viewer) -> None: ...

    def feed_audio(self, chunk: AudioChunk) -> None: ...

    def feed_video(self, frame: tuple[np.ndarray, int]) -> None: ...

    def add_client_latency(self, ms: float) -> None: ...

    async def control(self, body: Any) -> ControlReply:
        """Carry out a control message (decoded JSON); raises ControlError."""


class Viewer:
    """One client's peer connection to one session."""

    def __init__(self, session: ViewerSession, ice_servers: tuple[str, ...], viewer_timeout: float) -> None:
        config = RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in ice_servers]) if ice_servers else None
        self.pc = RTCPeerConnection(config)
        self.session = session
        self.viewer_timeout = viewer_timeout
        self.channel = None
        self.created = time.monotonic()
        self.connected = False
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self.pc.on("connectionstatechange", self._on_state)
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_channel)

    async def answer(self, offer: OfferRequest) -> RTCSessionDescription:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type=offer.type))
        for name in offer.tracks:
            self.pc.addTrack(self.session.video_track(name))
        if offer.audio:
            self.pc.addTrack(self.session.audio_track())
        if offer.codec:
            self._prefer(CODECS[offer.codec])
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self.session.add_viewer(self)
        self._spawn(self._watch_liveness())
        self._spawn(self._watch_connect(min(CONNECT_TIMEOUT, self.viewer_timeout)))
        return self.pc.localDescription

    def _prefer(self, mime: str) -> None:
        codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in (mime, "video/rtx")]
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video" and transceiver.sender.track is not None:
                transceiver.setCodecPreferences(codecs)

    # --- events ---------------------------------------------------------------------------

    async def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected = True
        if self.pc.connectionState in ("failed", "closed"):
            await self.close()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._spawn(self._read_input(track))

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.on("message", self._on_message)

    def _on_message(self, message: Any) -> None:
        """A message on the data channel. Nothing a client sends may escape into aiortc's
        loop: a message that cannot be parsed gets an error reply, anything else is logged."""
        try:
            self._take(message)
        except Exception:
            log.exception("viewer of session %s: a data channel message failed", self.session.id)

    def _take(self, message: Any) -> None:
        if not isinstance(message, str):
            return
        try:
            data = security.loads(message, max_bytes=MAX_CHANNEL_MESSAGE)
        except security.JSONRejected as exc:
            self._send({"type": "reply", "status": exc.status, "ok": False, "error": str(exc)})
            return
        if isinstance(data, dict) and "kind" in data:
            self._spawn(self._reply(data))
            return
        if isinstance(data, dict) and data.get("type") == "latency" and isinstance(data.get("ms"), list):
            for ms in data["ms"][:256]:
                if isinstance(ms, (int, float)) and not isinstance(ms, bool) and 0 <= ms < 60_000:
                    self.session.add_client_latency(float(ms))

    async def _reply(self, body: dict[str, Any]) -> None:
        """A control message from the channel, answered on it (docs/api.md, data channel)."""
        host = getattr(self.session, "host", None)
        problem = security.client_option_error(host.drivers, body) if host is not None else None
        if problem is not None:
            self._send({"type": "reply", "status": 422, "ok": False, "error": problem})
            return
        try:
            reply = await self.session.control(body)
        except ControlError as exc:
            self._send({"type": "reply", "status": exc.status, "ok": False, "error": str(exc)})
            return
        self._send({"type": "reply", "status": 200, **reply.as_json()})

    def on_frame_sent(self, seq: int, capture_ns: int, pts: int) -> None:
        self._send({"type": "frame", "seq": seq, "capture_ns": capture_ns, "pts": pts})

    def on_event(self, event: dict[str, Any]) -> None:
        self._send(event)

    def _send(self, payload: dict[str, Any]) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open" and ch.bufferedAmount < MAX_CHANNEL_BUFFER:
            try:
                ch.send(json.dumps(payload))
            except Exception:  # a closing channel
                pass

    # --- input tracks ---------------------------------------------------------------------

    async def _read_input(self, track: MediaStreamTrack) -> None:
        seq = 0
        try:
            while True:
                frame = await track.recv()
                if track.kind == "audio" and self.session.wants_audio:
                    self.session.feed_audio(audio_chunk(self.session.id, seq, frame))
                elif track.kind == "video" and self.session.wants_video:
                    self.session.feed_video((frame.to_ndarray(format="rgb24"), time.time_ns()))
                seq += 1
        except MediaStreamError:
            return

    # --- liveness -------------------------------------------------------------------------

    async def _watch_liveness(self) -> None:
        while not self._closed:
            await asyncio.sleep(LIVENESS_INTERVAL)
            if await self._silent_for() > self.viewer_timeout:
                log.info("viewer of session %s sent no RTCP for %.0f s; closing it", self.session.id, self.viewer_timeout)
                await self.close()

    async def _watch_connect(self, timeout: float) -> None:
        """Free the slot of an offer that was answered but never connected."""
        await asyncio.sleep(timeout)
        if not self.connected and not self._closed:
            log.info("viewer of session %s did not connect within %g s; closing it", self.session.id, timeout)
            await self.close()

    async def _silent_for(self) -> float:
        """Seconds since the last RTCP receiver report (since creation when none came yet)."""
        stats = await self.pc.getStats()
        reports = [s.timestamp for s in stats.values() if getattr(s, "type", "") == "remote-inbound-rtp"]
        if not reports:
            return time.monotonic() - self.created
        now = datetime.datetime.now(datetime.timezone.utc)
        latest = max(reports)
        if latest.tzinfo is None:
            latest = latest.replace(tzinfo=datetime.timezone.utc)
        return (now - latest).total_seconds()

    # --- teardown -------------------------------------------------------------------------

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.session.remove_viewer(self)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        try:
            await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT)
        except TimeoutError:  # aiortc waits for RTP that never started on a half-made connection
            log.warning("peer connection of session %s did not close within %g s", self.session.id, CLOSE_TIMEOUT)


def pending_viewers(viewers) -> int:
    """How many of ``viewers`` were answered but have not connected yet."""
    return sum(1 for v in viewers if not getattr(v, "connected", True))


def audio_chunk(session_id: str, seq: int, frame: Any) -> AudioChunk:
    """An av.AudioFrame as an AudioChunk: (samples, channels) int16."""
    pcm = frame.to_ndarray()
    if pcm.dtype != np.int16:
        pcm = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
    channels = len(frame.layout.channels)
    samples = pcm.reshape(-1, channels) if frame.format.is_packed else pcm.T
    return AudioChunk(session_id, seq, time.time_ns(), int(frame.sample_rate), np.ascontiguousarray(samples))
