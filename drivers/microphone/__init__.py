"""Built-in microphone driver plugin (entry point ``microphone`` in the ``flamecast`` group):
speech from a device, the browser, pushed PCM or a file to jaw and mouth shapes, with the audio
passed through in sync. Commands: ``flamecast train microphone``, ``flamecast eval microphone``."""

from flamecast.plugins import hookimpl

from .commands import EVAL_COMMAND, TRAIN_COMMAND
from .driver import MicrophoneDriver, MicrophoneOptions


@hookimpl
def flamecast_register_drivers(register):
    register(MicrophoneDriver)


@hookimpl
def flamecast_register_commands(register):
    register(TRAIN_COMMAND)
    register(EVAL_COMMAND)


__all__ = ["MicrophoneDriver", "MicrophoneOptions"]
