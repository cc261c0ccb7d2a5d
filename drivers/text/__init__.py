"""Built-in text driver plugin (entry point ``text`` in the ``flamecast`` group): Text2FLAME,
prompts to head motion and expression with two small diffusion models (MotionDM, EmotionDM)."""

from flamecast.plugins import hookimpl

from .driver import TextDriver, TextOptions


@hookimpl
def flamecast_register_drivers(register):
    register(TextDriver)


@hookimpl
def flamecast_register_commands(register):
    from .commands import EVAL, TRAIN

    register(TRAIN)
    register(EVAL)


__all__ = ["TextDriver", "TextOptions"]
