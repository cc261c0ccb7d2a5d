"""The wire protocol: round trips, every documented limit, and fuzzing of the deserializer."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flamecast.plugins import FlameFrame
from flamecast.plugins import protocol as wire


def _frame(**kw) -> FlameFrame:
    rng = np.random.default_rng(0)
    base = dict(session_id="s1", seq=7, capture_ns=123, pose=rng.normal(size=15), expression=rng.normal(size=16),
                eyelids=[0.1, 0.9], translation=[0, 0.01, 0])
    return FlameFrame(**{**base, **kw})


def test_flame_round_trip_keeps_every_field():
    frame = _frame(shape=np.arange(10))
    back = wire.frame_from_envelope(wire.unpack(wire.flame_message(frame, sent_ns=5)))
    assert back.session_id == "s1" and back.seq == 7 and back.capture_ns == 123
    for name in ("pose", "expression", "shape", "eyelids", "translation"):
        np.testing.assert_array_equal(getattr(back, name), getattr(frame, name))


def test_flame_optional_fields_stay_absent():
    back = wire.frame_from_envelope(wire.unpack(wire.flame_message(FlameFrame(session_id="a", expression=np.zeros(3)))))
    assert back.eyelids is None and back.shape is None and back.translation is None


def test_video_round_trip():
    views = np.random.default_rng(1).integers(0, 255, (4, 16, 24, 3), dtype=np.uint8)
    msg = wire.VideoFrame("s", 3, 10, 20, views, ("a", "b", "c", "d"))
    back = wire.video_from_envelope(wire.unpack(wire.video_message(msg)))
    assert back.view_ids == ("a", "b", "c", "d") and back.render_ns == 20
    np.testing.assert_array_equal(back.views, views)


def test_session_messages():
    env = wire.unpack(wire.session_open_message("s", generator="mesh", options={"size": 256}, portrait=b"\x89PNG"))
    assert env.type == wire.SESSION_OPEN and env.meta["generator"] == "mesh"
    assert env.buffers["portrait"].tobytes() == b"\x89PNG"
    env = wire.unpack(wire.session_status_message("s", "error", error="no face"))
    assert env.meta == {"state": "error", "error": "no face"}
    assert wire.unpack(wire.session_close_message("s", "deleted")).meta["reason"] == "deleted"


def test_audio_round_trip():
    chunk = wire.AudioChunk("s", 1, 2, 48000, np.arange(960, dtype=np.int16).reshape(480, 2))
    back = wire.audio_from_envelope(wire.unpack(wire.audio_message(chunk)))
    assert back.sample_rate == 48000 and back.samples.shape == (480, 2)


def test_big_endian_input_travels_little_endian():
    frames = wire.pack(wire.FLAME, "s", buffers={"pose": np.arange(15, dtype=">f4"), "expression": np.zeros(2, "<f4")})
    env = wire.unpack(frames)
    assert env.buffers["pose"].dtype.str == "<f4" and env.buffers["pose"][3] == 3


def test_unknown_type_and_extra_fields_are_ignored():
    header = msgpack.packb({"v": 1, "type": "future.thing", "seq": 1, "ts": {}, "meta": {}, "buffers": [], "new": 1})
    env = wire.unpack([b"s", header])
    assert env.type == "future.thing"


def _header(**kw) -> bytes:
    base = {"v": 1, "type": "flame", "seq": 0, "ts": {}, "meta": {}, "buffers": []}
    return msgpack.packb({**base, **kw})


@pytest.mark.parametrize(
    "frames, reason",
    [
        ([b"s"], "at least 2 frames"),
        ([b"s", b"\xc1garbage"], "not valid msgpack"),
        ([b"s", msgpack.packb([1, 2])], "not a map"),
        ([b"s", _header(v=2)], "version 2"),
        ([b"s", _header(seq="x")], "wrong type"),
        ([b"\xff\xfe", _header()], "not UTF-8"),
        ([b"x" * (wire.MAX_TOPIC_BYTES + 1), _header()], "topic longer"),
        ([b"s", _header(buffers=[{"name": "a", "dtype": "<f4", "shape": [2]}])], "lists 1 buffers"),
        ([b"s", _header(buffers=[{"name": "a", "dtype": "<f4", "shape": [3]}]), b"\0" * 8], "spec says 12"),
        ([b"s", _header(buffers=[{"name": "a", "dtype": "object", "shape": [1]}]), b"\0"], "dtype"),
        ([b"s", _header(buffers=[{"name": "a", "dtype": "<f4", "shape": [1, 1, 1, 1, 1]}]), b"\0" * 4], "bad shape"),
        ([b"s", _header(buffers=[{"name": "a", "dtype": "<f4", "shape": [1]}]), np.float32("nan").tobytes()], "non-finite"),
        ([b"s", b"\x80" * (wire.MAX_HEADER_BYTES + 1)], "header larger"),
        ([b"s", _header()] + [b""] * (wire.MAX_BUFFERS + 1), "more than"),
    ],
)
def test_bad_messages_raise_protocol_error(frames, reason):
    with pytest.raises(wire.ProtocolError, match=reason):
        wire.unpack(frames)


def test_oversized_message_rejected_without_decoding():
    with pytest.raises(wire.ProtocolError, match="message larger"):
        wire.unpack([b"s", _header(), b"\0" * (wire.MAX_MESSAGE_BYTES + 1)])


def test_typed_readers_reject_wrong_layouts():
    bad_pose = wire.unpack(wire.pack(wire.FLAME, "s", buffers={"pose": np.zeros(14, np.float32), "expression": np.zeros(2, np.float32)}))
    with pytest.raises(wire.ProtocolError, match="pose must have 15"):
        wire.frame_from_envelope(bad_pose)
    no_expr = wire.unpack(wire.pack(wire.FLAME, "s", buffers={"pose": np.zeros(15, np.float32)}))
    with pytest.raises(wire.ProtocolError, match="lacks buffer 'expression'"):
        wire.frame_from_envelope(no_expr)
    f64 = wire.unpack(wire.pack(wire.FLAME, "s", buffers={"pose": np.zeros(15), "expression": np.zeros(2)}))
    with pytest.raises(wire.ProtocolError, match="must be <f4"):
        wire.frame_from_envelope(f64)
    video = wire.unpack(wire.pack(wire.VIDEO, "s", meta={"view_ids": ["a"]}, buffers={"views": np.zeros((1, 4, 4, 4), np.uint8)}))
    with pytest.raises(wire.ProtocolError, match="views must be"):
        wire.video_from_envelope(video)
    video = wire.unpack(wire.pack(wire.VIDEO, "s", meta={"view_ids": ["a", "b"]}, buffers={"views": np.zeros((1, 4, 4, 3), np.uint8)}))
    with pytest.raises(wire.ProtocolError, match="one name per view"):
        wire.video_from_envelope(video)
    with pytest.raises(wire.ProtocolError, match="expected a video"):
        wire.video_from_envelope(bad_pose)


def test_pack_refuses_unknown_types_and_dtypes():
    with pytest.raises(wire.ProtocolError):
        wire.pack("nope")
    with pytest.raises(wire.ProtocolError, match="cannot travel"):
        wire.pack(wire.FLAME, buffers={"x": np.zeros(2, np.complex64)})


def _decode_any(frames) -> None:
    """unpack plus every typed reader: only ProtocolError may escape."""
    try:
        env = wire.unpack(frames)
    except wire.ProtocolError:
        return
    for reader in (wire.frame_from_envelope, wire.video_from_envelope, wire.audio_from_envelope):
        try:
            reader(env)
        except wire.ProtocolError:
            pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_arbitrary_bytes_only_raise_protocol_error(frames):
    _decode_any(frames)


_valid = [
    wire.flame_message(_frame()),
    wire.video_message(wire.VideoFrame("s", 1, 2, 3, np.zeros((2, 4, 4, 3), np.uint8), ("a", "b"))),
    wire.audio_message(wire.AudioChunk("s", 1, 2, 16000, np.zeros((8, 1), np.int16))),
    wire.session_open_message("s", generator="mesh", options={"views": ["front"]}, portrait=b"abc"),
]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(_valid))),
    st.data(),
)
def test_mutated_valid_messages_only_raise_protocol_error(index, data):
    frames = [bytearray(f) for f in _valid[index]]
    for _ in range(data.draw(st.integers(1, 4))):
        part = data.draw(st.integers(0, len(frames) - 1))
        op = data.draw(st.sampled_from(["flip", "truncate", "extend", "drop", "dup"]))
        buf = frames[part]
        if op == "flip" and buf:
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del buf[data.draw(st.integers(0, len(buf))):]
        elif op == "extend":
            buf.extend(data.draw(st.binary(max_size=16)))
        elif op == "drop" and len(frames) > 1:
            frames.pop(part)
        elif op == "dup":
            frames.insert(part, bytearray(buf))
    _decode_any([bytes(f) for f in frames])


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=20))
def test_arbitrary_msgpack_headers_only_raise_protocol_error(header_value):
    for header in (header_value, {"v": 1, "type": "flame", "buffers": header_value},
                   {"v": 1, "type": "video", "meta": header_value, "buffers": []},
                   {"v": 1, "type": "flame", "ts": header_value}):
        try:
            raw = msgpack.packb(header)
        except (TypeError, ValueError, OverflowError):
            continue
        _decode_any([b"s", raw, b"\0" * 60])


# --- hostile headers: whatever a header declares, unpack and the readers raise ProtocolError only

_ints = st.one_of(st.integers(-2**64, 2**64), st.sampled_from([0, 1, 2**31, 2**62, 2**63 - 1, 2**63, 2**64 - 1]))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(_ints, max_size=6), dtype=st.sampled_from(sorted(wire.DTYPES)), raw=st.binary(max_size=64),
       seq=_ints, ts=_ints, kind=st.sampled_from([wire.FLAME, wire.VIDEO, wire.AUDIO, "x"]))
def test_declared_shapes_and_integers_never_escape_as_other_errors(shape, dtype, raw, seq, ts, kind):
    header = {"v": 1, "type": kind, "seq": seq, "ts": {"capture_ns": ts},
              "buffers": [{"name": "pose", "dtype": dtype, "shape": shape}]}
    try:
        packed = msgpack.packb(header)
    except (OverflowError, ValueError):  # msgpack cannot even carry it
        return
    try:
        env = wire.unpack([b"s", packed, raw])
    except wire.ProtocolError:
        return
    assert 0 <= env.seq < 2**63 and abs(env.ts["capture_ns"]) < 2**63
    for read in (wire.frame_from_envelope, wire.video_from_envelope, wire.audio_from_envelope):
        try:
            read(env)
        except wire.ProtocolError:
            pass


def test_the_shape_that_killed_the_worker_is_a_protocol_error():
    header = msgpack.packb({"v": 1, "type": "flame", "buffers": [{"name": "pose", "dtype": "<f4", "shape": [0, 2**63]}]})
    with pytest.raises(wire.ProtocolError, match="bad shape"):
        wire.unpack([b"s", header, b""])
    header = msgpack.packb({"v": 1, "type": "flame", "buffers": [{"name": "pose", "dtype": "<f4", "shape": [0, 2**26, 2**26, 2**26]}]})
    with pytest.raises(wire.ProtocolError):
        wire.unpack([b"s", header, b""])
    with pytest.raises(wire.ProtocolError, match="seq"):
        wire.unpack([b"s", msgpack.packb({"v": 1, "type": "flame", "seq": 2**64 - 1})])


@given(views=st.lists(st.text(max_size=40), max_size=20), size=st.integers(0, 5000))
@settings(max_examples=200)
def test_a_view_request_that_passes_makes_messages_the_wire_carries(views, size):
    if wire.view_request_error(views or None, size) is not None:
        return
    n = len(views) if views else 1
    assert n <= wire.MAX_VIEWS and wire.video_bytes(n, size) + wire.MAX_HEADER_BYTES + wire.MAX_TOPIC_BYTES <= wire.MAX_MESSAGE_BYTES


def test_view_requests_the_probe_found():
    assert "at most 16 views" in wire.view_request_error([f"v{i}" for i in range(24)], 1024)
    assert "is not an id" in wire.view_request_error(["left" + "9" * 400], 64)
    assert "fewer views or a smaller size" in wire.view_request_error([f"v{i}" for i in range(16)], 2048)
    assert wire.view_request_error(["front", "left30"], 1024) is None


def test_video_mattes_round_trip_and_are_checked():
    views = np.zeros((2, 4, 6, 3), np.uint8)
    mattes = np.arange(48, dtype=np.uint8).reshape(2, 4, 6)
    frame = wire.VideoFrame("s", 3, 1, 2, views, ("front", "left30"), mattes)
    back = wire.video_from_envelope(wire.unpack(wire.video_message(frame)))
    np.testing.assert_array_equal(back.mattes, mattes)
    assert wire.video_from_envelope(wire.unpack(wire.video_message(wire.VideoFrame("s", 3, 1, 2, views, ("a", "b"))))).mattes is None
    wrong = wire.VideoFrame("s", 3, 1, 2, views, ("a", "b"), np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(wire.ProtocolError, match="mattes"):
        wire.video_from_envelope(wire.unpack(wire.video_message(wrong)))
