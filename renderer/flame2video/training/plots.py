"""Loss-curve images: one phase (training and held-out loss, held-out PSNR) or a whole run (every phase)."""

from __future__ import annotations

import json
from pathlib import Path


def _running_mean(values: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax_loss, ax_psnr, history: list[dict], validations: list[dict], label: str) -> None:
    steps = [h["step"] for h in history]
    losses = [h["loss"] for h in history]
    if losses:
        k = max(1, len(losses) // 50)
        ax_loss.plot(steps, losses, alpha=0.25, lw=0.8)
        ax_loss.plot(steps, _running_mean(losses, k), lw=1.6, label=label)
    held = [(v["step"], v["held_out_loss"]) for v in validations if v.get("held_out_loss") is not None]
    if held:  # the loss on fixed held-out batches with fixed noise
        ax_loss.plot(*zip(*held), marker="s", ls="--", color="black", lw=1, label="held-out")
    points = [(v["step"], v["psnr"]) for v in validations if v.get("psnr") is not None]
    if points:
        ax_psnr.plot(*zip(*points), marker="o", label=label)


def plot_phase(history: list[dict], validations: list[dict], path: Path, title: str = "") -> bool:
    """Training loss (raw and running mean; the held-out loss as squares) and held-out PSNR
    against step; False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    _draw(a, b, history, validations, title)
    a.set(xlabel="step", ylabel="training loss", title=f"{title}: loss")
    a.set_yscale("log")
    b.set(xlabel="step", ylabel="held-out PSNR (dB)", title=f"{title}: validation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_run(out: Path, path: Path) -> bool:
    """Every phase of a run (``OUT/phase-*/history.json``) in one image."""
    plt = _pyplot()
    order = ("phase-vae", "phase-1", "phase-2", "phase-3", "phase-distill")
    phases = sorted(Path(out).glob("phase-*/history.json"),
                    key=lambda p: order.index(p.parent.name) if p.parent.name in order else len(order))
    if plt is None or not phases:
        return False
    fig, axes = plt.subplots(2, len(phases), figsize=(3.4 * len(phases), 5.6), squeeze=False)
    for i, hist in enumerate(phases):
        data = json.loads(hist.read_text())
        name = hist.parent.name
        _draw(axes[0, i], axes[1, i], data["history"], data["validations"], name)
        axes[0, i].set(title=name, xlabel="step", yscale="log")
        axes[1, i].set(xlabel="step")
    axes[0, 0].set_ylabel("training loss")
    axes[1, 0].set_ylabel("held-out PSNR (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
