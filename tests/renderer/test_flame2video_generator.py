"""The flame2video backend end to end on the tiny profile: plugin registration, weights or a
clear refusal, FLAME renderings of the built-in head, and a session through the real generator
worker over ZeroMQ."""

from __future__ import annotations

import numpy as np
import pytest

from flamecast.plugins import FlameFrame, GeneratorSessionSpec
from flamecast.plugins import protocol as wire
from flamecast.plugins.manager import make_plugin_host
from flamecast.renderer.flame2video import FLAME2VideoGenerator, FLAME2VideoOptions
from flamecast.renderer.flame2video import generator as gen_module
from flamecast.renderer.flame2video.components import random_components, save_components
from flamecast.renderer.flame2video.config import tiny_config
from flamecast.renderer.flame2video.weights import MissingWeightsError, flame2video_root


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    save_components(random_components(tiny_config(), seed=0), flame2video_root(root))
    return root


def frames(n: int, start: int = 0) -> list[FlameFrame]:
    out = []
    for i in range(start, start + n):
        pose = np.zeros(15, np.float32)
        pose[1], pose[6] = 0.2 * np.sin(i / 3), 0.1
        out.append(FlameFrame(session_id="s", seq=i, capture_ns=i, pose=pose, expression=np.full(16, 0.1 * (i % 3))))
    return out


def test_registered_through_the_entry_point():
    host = make_plugin_host()
    assert host.generators.get("flame2video") is FLAME2VideoGenerator


def test_refuses_without_weights_and_says_what_is_missing(tmp_path):
    gen = FLAME2VideoGenerator({"device": "cpu", "weights_dir": str(tmp_path)})
    spec = GeneratorSessionSpec("s", None, FLAME2VideoOptions(profile="tiny"))
    with pytest.raises(MissingWeightsError, match="denoising_unet") as err:
        gen.open_session(spec)
    assert "--allow-random-weights" in str(err.value)


def test_session_from_weights_renders_all_views(weights_dir):
    gen = FLAME2VideoGenerator({"device": "cpu", "weights_dir": str(weights_dir)})
    session = gen.open_session(GeneratorSessionSpec("s", None, FLAME2VideoOptions(profile="tiny", seed=3)))
    assert session.view_ids == ("front", "left30")
    assert session.step(frames(1)) == []
    out = session.step(frames(2, start=1))
    assert [r.source.seq for r in out] == [0, 1]
    assert out[0].views.shape == (2, 64, 64, 3) and out[0].views.dtype == np.uint8
    assert out[0].view_ids == ("front", "left30")
    renders = session.stream.conditioner(frames(2))
    assert renders.shape == (2, 2, 3, 64, 64) and 0 <= float(renders.min()) and float(renders.max()) <= 1
    assert float(renders.std()) > 0.05  # the head is drawn, not a blank frame
    assert session.describe()["reference_runs"] == 1


def test_random_weights_only_with_the_flag(tmp_path):
    gen = FLAME2VideoGenerator({"device": "cpu", "weights_dir": str(tmp_path), "allow_random_weights": True})
    session = gen.open_session(GeneratorSessionSpec("s", None, FLAME2VideoOptions(profile="tiny", views=("front",))))
    assert session.view_ids == ("front",)
    assert len(session.step(frames(2))) == 2


def test_packages_without_bytecode_are_named(tmp_path, monkeypatch):
    import importlib
    import py_compile
    import sys

    (tmp_path / "fc_plain_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    module = importlib.import_module("fc_plain_module")
    monkeypatch.delitem(sys.modules, "fc_plain_module")
    assert gen_module.without_bytecode(module, np) == ["fc_plain_module"]
    py_compile.compile(module.__file__)  # where the import system looks for it
    assert gen_module.without_bytecode(module, np) == []


def test_a_build_without_bytecode_says_what_to_do(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(gen_module, "without_bytecode", lambda *modules: [m.__name__ for m in modules])
    gen = FLAME2VideoGenerator({"device": "cpu", "weights_dir": str(tmp_path), "allow_random_weights": True})
    with caplog.at_level("WARNING", logger=gen_module.__name__):
        gen.open_session(GeneratorSessionSpec("s", None, FLAME2VideoOptions(profile="tiny", views=("front",))))
    [record] = [r for r in caplog.records if "byte-code" in r.getMessage()]
    assert "torch, diffusers have no byte-code" in record.getMessage()
    assert "docs/generator.md" in record.getMessage()


def test_random_frames_number_on_from_start_and_carry_extras_when_asked():
    a = gen_module.random_frames(np.random.default_rng(0), 3, 10, 7)
    b = gen_module.random_frames(np.random.default_rng(1), 3, 10, 7, extras=True)
    assert [f.seq for f in a] == [7, 8, 9] and a[0].expression.shape == (10,)
    assert not np.allclose(a[0].pose, b[0].pose) and not np.allclose(a[0].pose, a[1].pose)
    assert a[0].eyelids is None and a[0].translation is None
    assert b[0].eyelids.shape == (2,) and b[0].translation.shape == (3,)


def test_options_are_checked():
    with pytest.raises(ValueError):
        FLAME2VideoOptions(profile="ultra")
    with pytest.raises(ValueError):
        FLAME2VideoOptions(steps=0)


def test_a_session_that_names_no_profile_gets_the_first_warm_profile(weights_dir):
    """A worker started with ``--warm tiny:steps=1`` serves a browser's session (no profile
    asked for) as ``tiny`` at one step, keeps what a session does ask for, and a worker with no
    warm profiles keeps the options' own default."""
    gen = FLAME2VideoGenerator({"weights_dir": str(weights_dir), "device": "cpu", "detect_face": False,
                                "warm_profiles": "tiny:steps=1,tiny"})

    def opened(raw: dict):
        session = gen.open_session(GeneratorSessionSpec("s", None, FLAME2VideoOptions.model_validate(raw)))
        try:
            return session.stream.pipeline.profile
        finally:
            session.close()

    profile = opened({})
    assert (profile.name, profile.steps) == ("tiny", 1)
    assert opened({"seed": 4, "steps": 2}).steps == 2  # the session's own options on top of the warm entry's
    assert opened({"profile": "tiny"}).steps == tiny_profile_steps()  # a profile named is taken as it is
    bare = FLAME2VideoGenerator({"weights_dir": str(weights_dir), "device": "cpu", "detect_face": False})
    assert bare.session_options(FLAME2VideoOptions.model_validate({})).profile == "live"


def tiny_profile_steps() -> int:
    from flamecast.renderer.flame2video.config import get_profile

    steps = get_profile("tiny").steps
    assert steps != 1  # else the test above could not tell the warm entry's steps from the profile's
    return steps


def test_tiny_profile_through_the_generator_worker(weights_dir, monkeypatch):
    from flamecast.renderer.worker import GeneratorWorker, WorkerSettings
    from tests.renderer.test_worker import Client, flame

    monkeypatch.setenv("FLAMECAST_WEIGHTS", str(weights_dir))
    settings = WorkerSettings(input="tcp://127.0.0.1:0", output="tcp://127.0.0.1:0", backends=("flame2video",),
                              default_backend="flame2video", stats_interval_s=0, queue_depth=64)
    with GeneratorWorker(settings, host=make_plugin_host()) as worker:
        client = Client(worker.endpoints)
        try:
            status = client.open("s1", generator="flame2video", profile="tiny")
            if status.meta.get("state") != "ready":  # the open may report "opening" first
                status = client.wait_for(lambda e: e.type == wire.SESSION_STATUS and e.meta.get("state") != "opening",
                                         timeout=120)
            assert status.meta.get("state") == "ready", dict(status.meta)
            for seq in range(4):
                client.send(flame("s1", seq))
            seen: list[int] = []
            while len(seen) < 4:
                env = client.wait_for(lambda e: e.type == wire.VIDEO and e.topic == "s1", timeout=120)
                seen.append(env.seq)
            assert sorted(seen) == [0, 1, 2, 3]
        finally:
            client.close()


def test_a_read_only_portrait_becomes_a_tensor_without_a_warning(monkeypatch):
    import warnings

    import torch

    from flamecast.renderer import portrait as portraits
    from flamecast.renderer.flame2video import generator

    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    img.flags.writeable = False  # square: the crop is the array itself, not a copy
    monkeypatch.setattr(portraits, "decode_image", lambda data: img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = generator.portrait_tensor(b"image bytes", detect_face=False)
    assert t.dtype == torch.float32 and t.shape == (3, 64, 64)
    assert torch.equal(t * 255, torch.from_numpy(img.copy()).permute(2, 0, 1).float())
