"""Prompt rules shared by the driver and the pipeline (no heavy imports here)."""

from __future__ import annotations

from flamecast.plugins.driver import MAX_PROMPT_CHARS

MAX_SECONDS = 10.0
CALM_PROMPT = "stays calm and still"  # what a weak match plays instead of a guess


def check_prompt(text: str | None, what: str = "prompt") -> str:
    """The stripped prompt; ValueError saying what to fix when it is empty or too long."""
    text = (text or "").strip()
    if not text:
        raise ValueError(f"the {what} is empty: describe a motion or an emotion, e.g. 'nods slowly and smiles'")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"the {what} has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    return text
