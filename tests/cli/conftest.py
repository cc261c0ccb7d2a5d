"""The command line's tests reuse the server tests' worker fixture (a real generator worker)."""

from tests.server.conftest import worker  # noqa: F401  (a pytest fixture)
