"""FLAME2Video: the MVPortrait generator (``flame2video`` backend, entry point in the ``flamecast`` group).

Modules: ``config`` (model configs, profiles), ``components`` (build/save/load), ``weights``
(weights directory, status, importers), ``unet`` (denoising UNet with motion and view
modules), ``attention`` (reference attention processors), ``flame_encoder``, ``pipeline``
(one window), ``stream`` (sliding windows), ``generator`` (the backend). Heavy imports
(torch, diffusers) happen when a pipeline is built, not when this package is imported.
"""

from flamecast.plugins import hookimpl

from .generator import FLAME2VideoGenerator, FLAME2VideoOptions


@hookimpl
def flamecast_register_generators(register):
    register(FLAME2VideoGenerator)


@hookimpl
def flamecast_register_commands(register):
    from .commands import COMMAND as weights_command
    from .training.commands import commands as training_commands

    register(weights_command)
    for command in training_commands():
        register(command)


__all__ = ["FLAME2VideoGenerator", "FLAME2VideoOptions"]
