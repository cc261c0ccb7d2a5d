"""What a session.open must carry before the worker builds anything."""

from __future__ import annotations

import numpy as np
import pytest

from flamecast.plugins import protocol as wire
from flamecast.renderer.worker.validation import OpenRefused, read_open

from .helpers import fake_host


@pytest.fixture(scope="module")
def registry():
    return fake_host().generators


def envelope(meta=None, buffers=None) -> wire.Envelope:
    return wire.unpack(wire.pack(wire.SESSION_OPEN, "s", meta=meta or {}, buffers=buffers))


def read(env, registry, served=()):
    return read_open(env, default="fake", served=served, registry=registry)


def test_a_valid_open_reads_generator_options_and_portrait(registry):
    env = wire.unpack(wire.session_open_message("s", generator="slow", options={"size": 24}, portrait=b"\x89PNG"))
    req = read(env, registry)
    assert (req.generator, req.options.size, req.portrait) == ("slow", 24, b"\x89PNG")
    assert read(envelope({"options": {}}), registry).generator == "fake"  # no name: the default


@pytest.mark.parametrize("meta, buffers, says", [
    ({"generator": 3}, None, "needs generator (a name) and options (a map)"),
    ({"options": [1, 2]}, None, "needs generator (a name) and options (a map)"),
    ({"generator": "nope"}, None, "unknown generator 'nope'; this worker serves: "),
    ({"options": {"size": "huge"}}, None, "generator 'fake': option 'size'"),
    ({}, {"portrait": np.zeros((2, 2), np.uint8)}, "1-D uint8 bytes"),
    ({}, {"portrait": np.zeros(4, np.float32)}, "1-D uint8 bytes"),
])
def test_a_bad_open_says_what_to_fix(registry, meta, buffers, says):
    with pytest.raises(OpenRefused) as err:
        read(envelope(meta, buffers), registry)
    assert says in str(err.value)


def test_a_worker_serves_only_the_generators_it_was_given(registry):
    with pytest.raises(OpenRefused, match="unknown generator 'slow'; this worker serves: fake$"):
        read(envelope({"generator": "slow"}), registry, served=("fake",))


def test_equal_settings_make_equal_keys(registry):
    a = read(envelope({"options": {"size": 16, "views": ["front"]}}), registry)
    b = read(envelope({"options": {"views": ["front"], "size": 16}}), registry)
    assert a.key == b.key
    c = read(wire.unpack(wire.session_open_message("s", generator="fake", options={"size": 16, "views": ["front"]},
                                                   portrait=b"other")), registry)
    assert c.key != a.key and c.key[2] is not None
