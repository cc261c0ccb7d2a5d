"""A well-behaved plugin registering one driver and observing sessions."""

import numpy as np

from flamecast.plugins import Driver, FlameFrame, hookimpl

SEEN: list = []


class StillDriver(Driver):
    name = "still"
    description = "Holds a neutral pose."

    async def frames(self):
        while True:
            yield FlameFrame(expression=np.zeros(self.context.head.n_expression, np.float32))


@hookimpl
def flamecast_register_drivers(register):
    register(StillDriver)


@hookimpl
def flamecast_session_started(session):
    SEEN.append(("started", session.id))


@hookimpl
def flamecast_session_ended(session, reason):
    SEEN.append(("ended", session.id, reason))
