"""`flamecast train text` and `flamecast eval text` end to end, tiny."""

from __future__ import annotations

import json

import pytest

from flamecast.cli import main


def test_train_then_eval_text(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["train", "text", "--steps", "4", "--clips", "24", "--batch", "8", "--paraphrases", "2", "--caption-mix",
                 "--text-noise", "0.5", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.split("\nweights in")[0])
    assert summary["steps"] == 4 and summary["paraphrases"] == 2 and (out / "motion.safetensors").is_file() and (out / "loss.png").is_file()
    assert main(["train", "text", "--steps", "6", "--clips", "24", "--batch", "8", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "config.json").read_text())["training"]["steps"] == 6
    capsys.readouterr()
    assert main(["eval", "text", "--weights", str(out), "--cases", "3", "--steps", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["motion_cases"] == 2 and report["emotion_cases"] == 2
    assert 0.0 <= report["motion_accuracy"] <= 1.0 and report["pose_jitter"] >= 0.0


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "text", "--resume", "--out", str(tmp_path / "none")])
    assert exc.value.code == 2 and "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "text", "--paraphrases", "0", "--out", str(tmp_path / "p")])
    assert exc.value.code == 2 and "--paraphrases" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "text", "--device", "tpu", "--out", str(tmp_path / "d")])
    assert exc.value.code == 2 and "--device tpu" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "text", "--text-noise", "-1", "--out", str(tmp_path / "n")])
    assert exc.value.code == 2 and "--text-noise" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "text", "--weights", str(tmp_path)])
    assert "weights missing" in capsys.readouterr().err
