"""Built-in generator plugins (entry point ``generators`` in the ``flamecast`` group).

``portrait``: the photograph itself animated in 2.5D, real-time on a CPU (docs/portrait.md).
``mesh``: the built-in head textured from the portrait, a preview of the FLAME motion
(docs/generator.md). ``flamecast eval generator`` measures any of them (``evaluate``).
Importing this package is cheap: torch and the head load when a generator is first used.
"""

from flamecast.plugins import hookimpl

from .mesh import MeshGenerator, MeshOptions
from .portrait import PortraitGenerator, PortraitOptions


@hookimpl
def flamecast_register_generators(register):
    register(PortraitGenerator)
    register(MeshGenerator)


@hookimpl
def flamecast_register_commands(register):
    from .evaluate import eval_command

    register(eval_command())


__all__ = ["MeshGenerator", "MeshOptions", "PortraitGenerator", "PortraitOptions"]
