"""flamecast's public plugin contract.

Plugin authors import everything from here::

    from flamecast.plugins import Driver, DriverOptions, FlameFrame, hookimpl
"""

from .commands import Command, CommandError
from .clock import Clock, FakeClock, MonotonicClock
from .driver import Control, ControlNotSupported, Driver, DriverContext, DriverOptions, OptionsError
from .frame import POSE_JOINTS, POSE_SIZE, FlameFrame, pose_slice
from .generator import (
    Generator,
    GeneratorOptions,
    GeneratorSession,
    GeneratorSessionSpec,
    GeneratorSettings,
    GeneratorUnavailable,
    OptionsRefused,
    Output,
    OutputOptions,
    OutputUnavailable,
    PortraitError,
    RenderedFrame,
    split_spec,
)
from .head import BUILTIN_EXPRESSION_NAMES, HEAD_NAMES, HeadSpace, builtin_head_space, named_head_space
from .hookspecs import hookimpl, hookspec
from .layers import ALL_CHANNELS, Channel, EmotionMode
from .session import SessionInfo

__all__ = [
    "ALL_CHANNELS",
    "BUILTIN_EXPRESSION_NAMES",
    "HEAD_NAMES",
    "Channel",
    "Clock",
    "Command",
    "CommandError",
    "Control",
    "ControlNotSupported",
    "Driver",
    "DriverContext",
    "DriverOptions",
    "EmotionMode",
    "FakeClock",
    "FlameFrame",
    "Generator",
    "GeneratorOptions",
    "GeneratorSession",
    "GeneratorSessionSpec",
    "GeneratorSettings",
    "GeneratorUnavailable",
    "HeadSpace",
    "MonotonicClock",
    "OptionsError",
    "OptionsRefused",
    "Output",
    "OutputOptions",
    "OutputUnavailable",
    "POSE_JOINTS",
    "POSE_SIZE",
    "PortraitError",
    "RenderedFrame",
    "SessionInfo",
    "builtin_head_space",
    "named_head_space",
    "hookimpl",
    "hookspec",
    "pose_slice",
    "split_spec",
]
