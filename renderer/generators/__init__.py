"""Built-in generator plugins (entry point ``generators`` in the ``flamecast`` group).

``mesh``: the built-in head textured from the portrait, real-time on a CPU (docs/generator.md).
Importing this package is cheap: torch and the head load when a generator is first used.
"""

from flamecast.plugins import hookimpl

from .mesh import MeshGenerator, MeshOptions


@hookimpl
def flamecast_register_generators(register):
    register(MeshGenerator)


__all__ = ["MeshGenerator", "MeshOptions"]
