"""The command line's tests reuse the server tests' worker fixture (a real generator worker) and the
renderer tests' compiled-worker fixture."""

from tests.renderer.conftest import aot_eager_compile  # noqa: F401  (a pytest fixture)
from tests.server.conftest import worker  # noqa: F401  (a pytest fixture)
