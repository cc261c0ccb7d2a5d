"""Several sessions batched through one UNet call give each session's frames as if it ran alone
(tiny profile, CPU): each keeps its own reference keys/values, noise, carried frames or cached
context."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamecast.plugins import GeneratorSessionSpec
from flamecast.renderer.flame2video import FLAME2VideoGenerator, FLAME2VideoOptions
from flamecast.renderer.flame2video.config import CARRY_MODES
from flamecast.renderer.flame2video.generator import batch_sizes, warm_frames
from flamecast.renderer.flame2video.stream import WindowStream, run_windows

from .test_flame2video_stream import PROFILE, conditioner, pipeline


def unet_rows(pipe) -> list[int]:
    rows: list[int] = []
    pipe.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    return rows


def assert_same_frames(got, want) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, a), (_, b) in zip(got, want):  # uint8: a float rounding may move one level
        assert int((a.int() - b.int()).abs().max()) <= 1


@pytest.mark.parametrize("carry_mode", CARRY_MODES)
def test_batched_windows_equal_each_session_alone(carry_mode):
    pipe = pipeline(carry_mode=carry_mode)
    refs = [pipe.prepare_reference(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i))) for i in range(2)]
    items = [[[10 * i + 2 * w, 10 * i + 2 * w + 1] for w in range(3)] for i in range(2)]
    alone = []
    for i, ref in enumerate(refs):
        s = WindowStream(pipe, ref, conditioner, seed=20 + i)
        alone.append([f for window in items[i] for f in s.push(window)])
    rows = unet_rows(pipe)
    streams = [WindowStream(pipe, ref, conditioner, seed=20 + i) for i, ref in enumerate(refs)]
    got: list[list] = [[] for _ in streams]
    for w in range(3):
        for s, its in zip(streams, items):
            s.pending.extend(its[w])
        if w == 0 and carry_mode == "cache":  # first windows (all W frames, eager): together, unpadded
            outs = run_windows(streams)
            assert rows[-1] == 2
        else:
            assert len({s.batch_key() for s in streams}) == 1
            outs = run_windows(streams, rows=3)  # padded to a batch size of 3
        for g, out in zip(got, outs):
            g.extend(out)
    for g, want in zip(got, alone):
        assert_same_frames(g, want)
    assert rows[-1] == 3  # the padded batch went through the UNet in one call


def test_generator_steps_sessions_of_a_profile_together():
    gen = FLAME2VideoGenerator({"device": "cpu", "allow_random_weights": True, "detect_face": False, "max_batch": 2})
    options = FLAME2VideoOptions(profile="tiny", carry_mode="cache", views=("front",))
    n_expr = gen.head.n_expression
    spec = lambda i: GeneratorSessionSpec(f"s{i}", None, options.model_copy(update={"seed": i}))  # noqa: E731
    alone = []
    for i in range(2):
        s = gen._open(spec(i), detect_face=False)
        alone.append(s.step(warm_frames(2, n_expr)) + s.step(warm_frames(4, n_expr, 2)))
    sessions = [gen._open(spec(i), detect_face=False) for i in range(2)]
    rows = unet_rows(gen.pipeline(sessions[0].stream.pipeline.profile))
    first = gen.step_sessions([(s, warm_frames(2, n_expr)) for s in sessions])
    assert rows == [2] * 2  # first windows together: 2 steps, both sessions in each call
    rows.clear()
    rest = gen.step_sessions([(s, warm_frames(4, n_expr, 2)) for s in sessions])
    assert rows == [2] * 4  # two windows of both sessions together, 2 steps each
    for i in range(2):
        got, want = first[i] + rest[i], alone[i]
        assert [r.source.seq for r in got] == [r.source.seq for r in want] == list(range(6))
        for a, b in zip(got, want):
            assert np.abs(a.views.astype(int) - b.views.astype(int)).max() <= 1


def test_batch_sizes_and_warm_up_without_compile_do_nothing():
    assert batch_sizes(1) == (1,) and batch_sizes(4) == (1, 2, 4) and batch_sizes(6) == (1, 2, 4, 6)
    gen = FLAME2VideoGenerator({"device": "cpu"})
    gen.warm_up()  # no compile, no warm_profiles: builds nothing
    assert gen._pipelines == {} and gen.compile_report() == {}
    gen = FLAME2VideoGenerator({"device": "cpu", "allow_random_weights": True, "warm_profiles": "tiny", "max_batch": 1})
    gen.warm_up()  # eager: every batch size once, nothing compiled
    assert len(gen._pipelines) == 1 and gen.warm_up_s is not None
    parts = gen.warm_up_parts["tiny"]
    assert list(parts) == ["build", "open", "first_windows", "batch_1"] and all(v >= 0 for v in parts.values())
    assert sum(parts.values()) <= gen.warm_up_s + 0.01
    build = gen.build_parts["tiny"]  # without compile: no compile setup
    assert list(build) == ["imports", "device", "models", "pipeline"] and sum(build.values()) <= parts["build"] + 0.01


def test_an_uncompiled_generator_lets_go_of_pipelines_no_session_uses():
    """Sessions with other settings, one after another, hold one pipeline at a time, not one per
    setting ever asked for; a pipeline a session still uses stays."""
    gen = FLAME2VideoGenerator({"device": "cpu", "allow_random_weights": True, "detect_face": False})

    def open_session(steps: int):
        return gen.open_session(GeneratorSessionSpec(f"s{steps}", None, FLAME2VideoOptions(profile="tiny", steps=steps)))

    first = open_session(1)
    second = open_session(2)
    assert sorted(p.steps for p in gen._pipelines) == [1, 2]
    first.close()
    third = open_session(3)  # the steps=1 pipeline has no session left
    assert sorted(p.steps for p in gen._pipelines) == [2, 3]
    second.close(), second.close()  # closing twice counts once
    third.close()
    open_session(1).close()
    assert sorted(p.steps for p in gen._pipelines) == [1]


def test_warm_profiles_may_carry_the_options_sessions_will_ask_for():
    from flamecast.renderer.flame2video.generator import resolve_profile, warm_options

    assert warm_options("live") == FLAME2VideoOptions(profile="live")
    profile = resolve_profile(warm_options(" hq:steps=2:size=384 "))
    assert (profile.name, profile.steps, profile.size) == ("hq", 2, 384)
    assert profile == resolve_profile(FLAME2VideoOptions(profile="hq", steps=2, size=384))
    with pytest.raises(ValueError, match="'steps' is not KEY=VALUE"):
        warm_options("hq:steps")
    with pytest.raises(ValueError, match="steps"):
        warm_options("hq:steps=none")


def test_sessions_sharing_a_conditioner_draw_encode_and_decode_together():
    """Frames handed to sessions in one turn are drawn in one drawing when the sessions share a
    conditioner; a batched window runs the FLAME encoder once, at the padded batch's size; each
    session still gets its frames as if it ran alone."""
    from flamecast.renderer.flame2video.conditioning import ConditioningStage, draw_together

    pipe = pipeline(carry_mode="cache")
    refs = [pipe.prepare_reference(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i))) for i in range(2)]
    turns = [([0, 1], [10, 11]), ([2, 3, 4], [12, 13, 14]), ([5], [15])]
    alone = []
    for i, ref in enumerate(refs):
        s = WindowStream(pipe, ref, conditioner, seed=20 + i)
        alone.append([f for turn in turns for f in s.push(turn[i])])
    drawings: list[list] = []

    def watched(items):
        drawings.append(list(items))
        return conditioner(items)

    encoded = []
    pipe.flame_encoder.register_forward_pre_hook(lambda m, args: encoded.append(args[0].shape[0]))
    stage = ConditioningStage(torch.device("cpu"))
    got: list[list] = [[], []]
    try:
        streams = [WindowStream(pipe, ref, watched, seed=20 + i, stage=stage) for i, ref in enumerate(refs)]
        for turn in turns:
            for s, items, drawing in zip(streams, turn, draw_together([(s.renders, t) for s, t in zip(streams, turn)])):
                s.add(items, drawing)
            while all(s.ready() for s in streams):
                first = streams[0].batch_key()[-1] == "record"
                for g, out in zip(got, run_windows(streams, rows=None if first else 3)):
                    g.extend(out)
    finally:
        stage.close()
    assert drawings == [[0, 1, 10, 11], [2, 3, 4, 12, 13, 14], [5, 15]]  # one drawing per turn
    per_window = PROFILE.stride * PROFILE.views  # images a session's window encodes
    assert encoded == [2 * per_window, 3 * per_window, 3 * per_window]  # once per window, padded to 3 after the first
    for g, want in zip(got, alone):
        assert_same_frames(g, want)


def test_sessions_with_the_same_views_share_one_conditioner_until_the_last_closes(monkeypatch):
    from flamecast.renderer.flame2video import generator as g
    from flamecast.renderer.flame2video.conditioning import ConditioningStage

    gen = FLAME2VideoGenerator({"device": "cpu", "allow_random_weights": True, "detect_face": False, "max_batch": 2})
    stage = ConditioningStage(torch.device("cpu"))  # what a GPU gets: frames drawn as they arrive
    monkeypatch.setattr(gen, "_stage", lambda device: stage)
    drawn: list[int] = []
    call = g.FlameConditioner.__call__
    monkeypatch.setattr(g.FlameConditioner, "__call__", lambda self, frames: drawn.append(len(frames)) or call(self, frames))
    options = FLAME2VideoOptions(profile="tiny", views=("front", "left30"))
    try:
        a, b = (gen.open_session(GeneratorSessionSpec(f"s{i}", None, options.model_copy(update={"seed": i})))
                for i in range(2))
        other = gen.open_session(GeneratorSessionSpec("o", None, options.model_copy(update={"views": ("front", "right30")})))
        assert a.stream.conditioner is b.stream.conditioner is not other.stream.conditioner
        outs = gen.step_sessions([(a, warm_frames(2, gen.head.n_expression)), (b, warm_frames(2, gen.head.n_expression)),
                                  (other, warm_frames(2, gen.head.n_expression))])
        assert [len(o) for o in outs] == [2, 2, 2]
        assert sorted(drawn) == [2, 4]  # a's and b's frames in one drawing, other's in its own
        a.close()
        assert len(gen._conditioners) == 2  # b still uses it
        b.close(), other.close()
        assert gen._conditioners == {}
    finally:
        stage.close()


def test_eager_first_windows_run_without_cudnn_autotuning(monkeypatch):
    """A compiled pipeline runs a session's first window eagerly, in batch sizes warm-up may not
    have run: cuDNN's autotuning of each new convolution shape would stall it, so it is off for
    that window and back on (as the compile settings set it) for the compiled steady windows."""
    pipe = pipeline(carry_mode="cache")
    pipe._compiled = True  # as after compile(): first windows run under _eager_unet
    seen: list[bool] = []
    pipe.unet.register_forward_pre_hook(lambda m, args: seen.append(torch.backends.cudnn.benchmark))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    stream = WindowStream(pipe, pipe.prepare_reference(torch.rand(3, 64, 64)), conditioner)
    assert len(stream.push([0, 1])) == 2  # the first window: eager
    first, seen[:] = list(seen), []
    assert len(stream.push([2, 3])) == 2  # a steady window
    assert first == [False] * PROFILE.steps and seen == [True] * PROFILE.steps
    assert torch.backends.cudnn.benchmark is True


def test_warm_up_opens_one_session_and_runs_one_first_window(monkeypatch):
    """Warm-up needs every batch size's windows, not several portraits: one session's portrait
    and first window, the other sessions starting from its state, then each batch size."""
    from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline

    references, windows = [], []
    prepare, denoise = FLAME2VideoPipeline.prepare_reference, FLAME2VideoPipeline.denoise_windows
    monkeypatch.setattr(FLAME2VideoPipeline, "prepare_reference", lambda self, p: references.append(1) or prepare(self, p))
    monkeypatch.setattr(FLAME2VideoPipeline, "denoise_windows", lambda self, jobs: windows.append(
        (len(jobs), jobs[0].carry.context is None)) or denoise(self, jobs))
    gen = FLAME2VideoGenerator({"device": "cpu", "allow_random_weights": True, "warm_profiles": "tiny:carry_mode=cache",
                                "max_batch": 2})
    gen.warm_up()
    assert len(references) == 1
    assert windows == [(1, True)] + [(1, False)] * 3 + [(2, False)] * 3  # one first window, then each batch size
    assert gen._conditioners == {} and all(n == 0 for n in gen._users.values())  # every warm-up session closed
