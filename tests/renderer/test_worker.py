"""The generator worker's tests live in tests/renderer/worker/, one file per module of the
package; the client and frame helpers other tests use are re-exported here."""

from tests.renderer.worker.helpers import Client, flame

__all__ = ["Client", "flame"]
