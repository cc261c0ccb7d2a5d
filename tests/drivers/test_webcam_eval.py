"""``flamecast eval webcam``'s known motions and a short run of the evaluation."""

import math

import numpy as np
import pytest

from flamecast.drivers.webcam.evaluate import FPS, KnownMotion, errors, evaluate, photo_sequence, render_truth


def test_motion_zero_is_the_documented_motion():
    m = KnownMotion.draw(0)
    assert m.amplitude_deg == (15.0, 30.0, 10.0) and m.jaw == 0.3 and m.photo_roll_deg == 25.0
    truth = render_truth(150)
    t = np.arange(150) / FPS
    np.testing.assert_allclose(truth.jaw, 0.3 * np.sin(np.pi * t / 1.3) ** 2, atol=1e-12)
    np.testing.assert_allclose(np.degrees(truth.euler[:, 1]), 30 * np.sin(2 * np.pi * t / 4.0), atol=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 17])
def test_drawn_motions_are_reproducible_start_neutral_and_stay_in_range(seed):
    a, b = render_truth(150, seed), render_truth(150, seed)
    np.testing.assert_array_equal(a.euler, b.euler)
    assert not np.allclose(a.euler, render_truth(150, 0).euler)
    # the first frame is the neutral face the driver calibrates on
    assert np.allclose(a.euler[0], 0) and a.jaw[0] == 0 and a.blink[0] == 0
    deg = np.degrees(np.abs(a.euler)).max(0)
    assert deg[0] <= 20 and deg[1] <= 35 and deg[2] <= 12
    assert 0.05 < a.jaw.max() <= 0.35 and a.blink.max() > 0.9
    frames, photo = photo_sequence(10, motion=seed)
    assert photo.euler[0, 2] == 0 and math.degrees(np.abs(photo.euler[:, 2]).max()) <= 30
    assert frames[0].shape == (480, 640, 3)


def test_errors_of_a_perfect_and_of_a_wrong_measurement():
    truth = render_truth(60, 3)
    perfect = errors(truth, truth, skip=5)
    assert perfect["yaw_median_deg"] == 0 and perfect["jaw_correlation"] == pytest.approx(1.0)
    off = type(truth)(truth.euler + np.radians(4.0), -truth.jaw, truth.blink)
    wrong = errors(truth, off, skip=5)
    assert wrong["pitch_median_deg"] == pytest.approx(4.0) and wrong["jaw_correlation"] == pytest.approx(-1.0)


def test_a_short_evaluation_on_a_drawn_motion_tracks_the_head():
    figures = evaluate(n_photo=30, n_render=40, size=320, motion=5)
    assert set(figures) >= {"photo_roll_median_deg", "render_yaw_median_deg", "render_pitch_median_deg",
                            "render_jaw_correlation", "render_blink_correlation"}
    assert figures["photo_roll_median_deg"] <= 3.0
    assert figures["render_yaw_median_deg"] <= 5.0 and figures["render_pitch_median_deg"] <= 5.0
    assert figures["render_jaw_correlation"] >= 0.5
