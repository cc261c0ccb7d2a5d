"""``python -m tests.cli.aot_eager_cli ARGS``: the command line with the ``aot_eager_compile``
fixture's replacements, for the processes that ``generator --prepare --jobs`` starts in a test."""

import sys

from flamecast.cli import main
from tests.renderer.conftest import aot_eager_patches

for target, name, value in aot_eager_patches():
    if isinstance(target, dict):
        target[name] = value
    else:
        setattr(target, name, value)
sys.exit(main())
