"""``flamecast eval generator``: the measurements behave (a tiny sweep, one view)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from flamecast.renderer.generators.evaluate import _configure, evaluate, format_table, psnr


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == float("inf")
    assert abs(psnr(a, a + 255) - 0.0) < 1e-9


def test_portrait_reproduces_the_photo_and_opens_its_mouth():
    report = evaluate("portrait", size=128, yaws=(0.0,), pitches=(0.0,), rolls=(0.0,), jaws=(0.0, 0.3))
    assert report.error is None and report.psnr_db >= 30.0
    assert report.yaw_median_deg < 5.0 and report.missed_faces == 0
    assert report.details["mouth_openings"][1] > report.details["mouth_openings"][0]
    assert "portrait" in format_table([report])


def test_unknown_generator_is_reported():
    report = evaluate("nope", yaws=(), pitches=(), rolls=(), jaws=())
    assert "no generator named" in report.error and not report.passed()


def test_command_arguments():
    parser = argparse.ArgumentParser()
    _configure(parser)
    args = parser.parse_args(["--generator", "portrait", "--generator", "mesh", "--size", "128"])
    assert args.generator == ["portrait", "mesh"] and args.size == 128
