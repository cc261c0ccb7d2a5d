"""Built-in webcam driver plugin (entry point ``webcam`` in the ``flamecast`` group): a face from
a local camera, the browser's camera or a video file drives the avatar (FaceMesh landmarks
fitted on the head's space; DECA's encoder when its weights are present). Commands:
``flamecast track VIDEO --out flame.npz`` and ``flamecast eval webcam``."""

from flamecast.plugins import hookimpl

from .driver import WebcamDriver
from .options import WebcamOptions


@hookimpl
def flamecast_register_drivers(register):
    register(WebcamDriver)


@hookimpl
def flamecast_register_commands(register):
    from .commands import eval_command, track_command

    register(track_command())
    register(eval_command())


__all__ = ["WebcamDriver", "WebcamOptions"]
