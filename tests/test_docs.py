"""Documentation that is part of the contract stays in step with the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from flamecast.plugins import hookspecs
from flamecast.plugins import protocol as wire

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _hookspecs():
    return {name: fn for name, fn in vars(hookspecs).items() if name.startswith("flamecast_") and callable(fn)}


def test_every_hookspec_has_a_docstring_and_a_section_with_its_signature():
    text = (DOCS / "plugins.md").read_text()
    specs = _hookspecs()
    assert len(specs) == 6
    for name, fn in specs.items():
        doc = inspect.getdoc(fn) or ""
        assert "Parameters" in doc and "Returns" in doc and "Called" in doc, name
        section = re.search(rf"^### {name}\n(.*?)(?=^### |\Z)", text, re.S | re.M)
        assert section, f"docs/plugins.md has no section for {name}"
        params = ", ".join(inspect.signature(fn).parameters)
        assert f"def {name}({params})" in section.group(1), f"{name}: signature missing in its section"


def test_protocol_doc_lists_every_message_type_and_limit():
    text = (DOCS / "protocol.md").read_text()
    assert f"version {wire.VERSION}" in text.lower()
    for t in wire.MESSAGE_TYPES:
        assert f"| `{t}` |" in text, t
    for dtype in wire.DTYPES:
        assert f"`{dtype}`" in text, dtype
    assert "128 bytes" in text and "64 KiB" in text and "64 MiB" in text
    assert f"| buffers per message | {wire.MAX_BUFFERS} |" in text
