"""The worker tests' shared fixture: a client of the module's ``worker``."""

from __future__ import annotations

import pytest

from .helpers import Client


@pytest.fixture
def client(worker):
    """What the server does, against the ``worker`` fixture of the test's module."""
    c = Client(worker.endpoints)
    yield c
    c.close()
