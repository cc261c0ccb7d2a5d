"""The layered driver runtime: several drivers drive one session, each owning channel groups.

``DriverStack`` ticks at the session rate. Each tick it takes the newest frame of every layer
(bottom first; the bottom layer is the fallback, idle, which owns every group and cannot be
removed), combines them with the ``Mixer`` (``flamecast.plugins.layers``), stamps the result and
hands it to the sink. A layer's driver is pulled at most once per tick, in its own task, so a
driver waiting for input (a camera frame, a microphone chunk) never delays the others.

A layer drops out, and the layers below take over its groups with a cross-fade, when:

* its driver raises (it is restarted with backoff; state ``crashed`` until then),
* its stream ends (state ``finished``),
* it has produced no frame for ``stale_after`` seconds (its input stopped; state ``stalled``),
* its driver reports ``active`` False (no face in view, silence), or it is muted.

Changes of a layer's state are reported through ``on_event`` so the server can tell clients.

``StackThread`` runs a stack in a thread of its own with its own event loop, and offers the
stack's API to the caller's loop: a driver that blocks (``time.sleep`` in ``frames()``, heavy
work without ``to_thread``) stalls only its own session, never the server or other sessions.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Coroutine, Sequence

from .clock import Clock, MonotonicClock
from .driver import Control, ControlNotSupported, Driver
from .frame import FlameFrame
from .head import HeadSpace, builtin_head_space
from .layers import ALL_CHANNELS, DEFAULT_FADE_S, Channel, EmotionMode, LayerInput, Mixer
from .runtime import Backoff

log = logging.getLogger(__name__)

DriverFactory = Callable[[], Driver]
Sink = Callable[[FlameFrame], Awaitable[None]]
EventSink = Callable[[dict[str, Any]], None]

DEFAULT_STALE_S = 1.0
BASE_LAYER = "base"


class LayerState(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STALLED = "stalled"
    CRASHED = "crashed"
    FINISHED = "finished"
    STOPPED = "stopped"


class LayerError(ValueError):
    """A layer action that cannot be done (a name already taken, the base layer moved)."""


class UnknownLayer(LayerError):
    """A layer name that is not in the stack."""


@dataclass
class LayerStats:
    name: str
    driver: str
    channels: list[str]
    state: str = LayerState.STARTING.value
    muted: bool = False
    active: bool = False
    frames: int = 0
    restarts: int = 0
    last_error: str | None = None
    driver_stats: dict[str, Any] | None = None  # what the driver's own stats() says (the webcam: its tracker)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class Layer:
    """One driver of the stack, its own restart policy and its newest frame."""

    def __init__(self, name: str, factory: DriverFactory, channels: frozenset[Channel], *, backoff: Backoff | None = None,
                 muted: bool = False) -> None:
        self.name = name
        self.factory = factory
        self.channels = channels
        self.muted = muted
        self.backoff = backoff or Backoff()
        self.driver: Driver | None = None
        self.state = LayerState.STARTING
        self.frames = 0
        self.restarts = 0
        self.last_error: str | None = None
        self._iter = None
        self._pull: asyncio.Future | None = None
        self._restart_at: float | None = None
        self._started_at = 0.0
        self._last_frame_at: float | None = None

    # --- the per-tick protocol -------------------------------------------------------------

    def begin(self, now: float) -> None:
        """Start the driver if due, and a pull when none is pending."""
        if self.state in (LayerState.FINISHED, LayerState.STOPPED):
            return
        if self.driver is None:
            if self._restart_at is not None and now < self._restart_at:
                return
            self._start(now)
        if self._pull is None:
            self._pull = asyncio.ensure_future(self._iter.__anext__())

    @property
    def pending(self) -> asyncio.Future | None:
        return self._pull

    async def collect(self, now: float, stale_after: float) -> tuple[FlameFrame | None, LayerState | None]:
        """The frame the pull produced (if it finished), and the new state if it changed."""
        before = self.state
        frame = None
        if self._pull is not None and self._pull.done():
            pull, self._pull = self._pull, None
            try:
                frame = pull.result()
                self.frames += 1
                self._last_frame_at = now
                self.state = LayerState.RUNNING
            except StopAsyncIteration:
                self.state = LayerState.FINISHED
                await self._close_driver()
            except Exception as exc:  # a driver must not take the stack down
                await self._crashed(exc, now)
        if self.state is LayerState.RUNNING and self._last_frame_at is not None and now - self._last_frame_at > stale_after:
            self.state = LayerState.STALLED
        return frame, (self.state if self.state is not before else None)

    def is_active(self) -> bool:
        if self.muted or self.state is not LayerState.RUNNING or self.driver is None:
            return False
        try:
            return bool(self.driver.active)
        except Exception:
            return False

    async def stop(self) -> None:
        self.state = LayerState.STOPPED
        if self._pull is not None:
            self._pull.cancel()
            await asyncio.gather(self._pull, return_exceptions=True)
            self._pull = None
        await self._close_driver()

    def stats(self) -> LayerStats:
        return LayerStats(self.name, self.driver.name if self.driver else "", sorted(c.value for c in self.channels),
                          self.state.value, self.muted, self.is_active(), self.frames, self.restarts, self.last_error,
                          self._driver_stats())

    def _driver_stats(self) -> dict[str, Any] | None:
        """A driver's ``stats()`` (optional; JSON-able counters), None when it has none or it fails."""
        stats = getattr(self.driver, "stats", None)
        if not callable(stats):
            return None
        try:
            value = stats()
            return dict(value) if isinstance(value, dict) else None
        except Exception:
            return None

    # --- internals -------------------------------------------------------------------------

    def _start(self, now: float) -> None:
        try:
            self.driver = self.factory()
            self._iter = self.driver.frames().__aiter__()
            self._started_at = now
            self._restart_at = None
        except Exception as exc:
            self.driver = None
            self._note_error(exc, now)
            raise

    async def _crashed(self, exc: BaseException, now: float) -> None:
        self.state = LayerState.CRASHED
        self._note_error(exc, now)
        await self._close_driver()

    def _note_error(self, exc: BaseException, now: float) -> None:
        self.restarts += 1
        self.last_error = f"{exc.__class__.__name__}: {exc}"
        self.state = LayerState.CRASHED
        self._restart_at = now + self.backoff.next_delay(now - self._started_at)
        log.warning("driver layer %s failed: %s", self.name, self.last_error)

    async def _close_driver(self) -> None:
        driver, self.driver, self._iter = self.driver, None, None
        if driver is not None:
            try:
                await driver.aclose()
            except Exception as exc:
                log.warning("error while closing driver layer %s: %s", self.name, exc)


@dataclass
class StackStats:
    frames: int = 0
    state: str = "starting"
    layers: list[dict[str, Any]] = field(default_factory=list)
    owners: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class DriverStack:
    """Runs a session's driver layers. ``run()`` until ``stop()`` (or ``max_frames``)."""

    def __init__(
        self,
        base: DriverFactory,
        sink: Sink,
        *,
        session_id: str,
        rate: float,
        head: HeadSpace | None = None,
        clock: Clock | None = None,
        fade: float = DEFAULT_FADE_S,
        emotion: EmotionMode = EmotionMode.ADD,
        stale_after: float = DEFAULT_STALE_S,
        on_event: EventSink | None = None,
        max_frames: int | None = None,
    ) -> None:
        self.session_id = session_id
        self.rate = float(rate)
        self.clock = clock or MonotonicClock()
        self.stale_after = stale_after
        self.max_frames = max_frames
        self._sink = sink
        self._on_event = on_event or (lambda event: None)
        self._mixer = Mixer(head or builtin_head_space(), fade=fade, emotion=emotion)
        self._layers: list[Layer] = [Layer(BASE_LAYER, base, ALL_CHANNELS)]
        self._seq = 0
        self._frames = 0
        self.last_frame: FlameFrame | None = None  # the newest combined frame sent
        self._stopped = False
        self._state = "starting"
        self._wake = asyncio.Event()

    # --- layers ----------------------------------------------------------------------------

    @property
    def layers(self) -> list[Layer]:
        """Bottom first; index 0 is the base layer."""
        return list(self._layers)

    def layer(self, name: str) -> Layer:
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise UnknownLayer(f"no layer {name!r}; layers: {', '.join(l.name for l in self._layers)}")

    def add(self, name: str, factory: DriverFactory, channels: frozenset[Channel], *, index: int | None = None,
            muted: bool = False) -> Layer:
        """Add a layer above the others (or at ``index``, 1 = just above the base)."""
        if any(layer.name == name for layer in self._layers):
            raise LayerError(f"a layer named {name!r} is already in the stack; pick another name")
        layer = Layer(name, factory, channels, muted=muted)
        position = len(self._layers) if index is None else max(1, min(int(index), len(self._layers)))
        self._layers.insert(position, layer)
        self._event(layer, "added")
        return layer

    async def remove(self, name: str) -> None:
        layer = self._movable(name)
        self._layers.remove(layer)
        self._mixer.forget(name)
        await layer.stop()
        self._event(layer, "removed")

    def move(self, name: str, index: int) -> None:
        layer = self._movable(name)
        self._layers.remove(layer)
        self._layers.insert(max(1, min(int(index), len(self._layers))), layer)
        self._event(layer, "moved")

    def mute(self, name: str, muted: bool) -> None:
        layer = self.layer(name)
        layer.muted = bool(muted)
        self._event(layer, "muted" if muted else "unmuted")

    async def replace(self, name: str, factory: DriverFactory, channels: frozenset[Channel]) -> None:
        """Swap a layer's driver in place (same name and position)."""
        layer = self._movable(name)
        index = self._layers.index(layer)
        await layer.stop()
        self._mixer.forget(name)
        self._layers[index] = Layer(name, factory, channels, muted=layer.muted)
        self._event(self._layers[index], "replaced")

    def _movable(self, name: str) -> Layer:
        layer = self.layer(name)
        if layer is self._layers[0]:
            raise LayerError(f"the base layer {name!r} cannot be removed, moved or replaced")
        return layer

    # --- control ---------------------------------------------------------------------------

    async def control(self, message: Control, layer: str | None = None) -> dict[str, Any]:
        """Send a control message to the named layer, or to the highest layer that takes it."""
        targets = [self.layer(layer)] if layer is not None else list(reversed(self._layers))
        for target in targets:
            if target.driver is None or target.state not in (LayerState.RUNNING, LayerState.STALLED):
                if layer is not None:
                    raise ControlNotSupported(f"layer {target.name!r} is not running ({target.state.value}); try again shortly")
                continue
            try:
                reply = await target.driver.control(message)
            except ControlNotSupported:
                if layer is not None:
                    raise
                continue
            return {**(reply or {}), "layer": target.name}
        running = ", ".join(f"{t.name} ({t.driver.name})" for t in self._layers if t.driver is not None)
        raise ControlNotSupported(f"no driver layer accepts {message.kind!r} messages (layers: {running or 'none running'})")

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick at ``rate`` until stopped; a stack that falls behind re-anchors instead of bursting."""
        next_t = self.clock.monotonic()
        try:
            while not self._stopped:
                period = 1.0 / self.rate  # a switched driver may change the rate
                await self.tick(next_t + period)
                now = self.clock.monotonic()
                next_t = now if next_t + period < now - period else next_t + period
                await self.clock.sleep_until(next_t)
        finally:
            await self.close()

    async def tick(self, deadline: float | None = None) -> None:
        """One frame: pull every layer (waiting for them until ``deadline``), mix, emit."""
        self._state = "running"
        await self._tick(self.clock.monotonic() + 1.0 / self.rate if deadline is None else deadline)

    def stop(self) -> None:
        self._stopped = True

    async def close(self) -> None:
        """Stop every layer's driver (idempotent)."""
        self._state = "stopped"
        for layer in self._layers:
            if layer.state is not LayerState.STOPPED:
                await layer.stop()

    def stats(self) -> StackStats:
        return StackStats(self._frames, self._state, [layer.stats().as_dict() for layer in self._layers],
                          self._mixer.winners())

    async def _tick(self, deadline: float) -> None:
        now = self.clock.monotonic()
        for layer in self._layers:
            try:
                layer.begin(now)
            except Exception:
                self._event(layer, "crashed")
        # The frame's capture time is the tick's start: a driver that answers at once (idle,
        # text, microphone) made its frame now, and the audio a driver passes through is stamped
        # on the same clock; a layer still waiting for input only delays the send.
        capture_ns = self.clock.now_ns()
        pending = [layer.pending for layer in self._layers if layer.pending is not None]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - self.clock.monotonic()))
        now = self.clock.monotonic()
        inputs = []
        for layer in self._layers:
            frame, changed = await layer.collect(now, self.stale_after)
            if changed is not None:
                self._event(layer, changed.value)
            inputs.append(LayerInput(layer.name, frame, layer.channels, layer.is_active(),
                                     getattr(layer.driver, "fade_in", None)))
        combined = self._mixer.step(inputs, 1.0 / self.rate)
        if combined is not None:
            await self._emit(combined, capture_ns)

    async def _emit(self, frame: FlameFrame, capture_ns: int) -> None:
        stamped = frame.stamped(session_id=self.session_id, seq=self._seq, capture_ns=capture_ns)
        self._seq += 1
        self._frames += 1
        self.last_frame = stamped
        await self._sink(stamped)
        if self.max_frames is not None and self._frames >= self.max_frames:
            self._stopped = True

    def _event(self, layer: Layer, what: str) -> None:
        event = {"type": "layer", "layer": layer.name, "event": what, "state": layer.state.value,
                 "error": layer.last_error, "t_ns": time.time_ns()}
        try:
            self._on_event(event)
        except Exception as exc:
            log.warning("layer event handler failed: %s", exc)


STOP_TIMEOUT_S = 5.0  # how long ``StackThread.run`` waits for a stopped stack's thread to end
CONTROL_TIMEOUT_S = 30.0  # how long a control message may take before the caller gives up (a first text prompt loads its models)


class StackThread:
    """A ``DriverStack`` in its own thread and event loop, driven from the caller's loop.

    ``add``, ``move``, ``mute``, ``stop``, ``layers``, ``layer``, ``stats`` and ``rate`` may be
    used from any thread; ``remove``, ``replace``, ``control`` and ``close`` are coroutines of
    the caller's loop that run on the stack's loop (``run_coroutine_threadsafe``). ``call_soon``
    hands work (an input chunk for a driver's queue) to the stack's loop. ``on_exit`` runs in
    the stack's thread once its loop is done (close what the thread owned, e.g. its socket).
    """

    def __init__(self, stack: DriverStack, *, name: str = "driver-stack", on_exit: Callable[[], None] | None = None,
                 control_timeout: float = CONTROL_TIMEOUT_S, stop_timeout: float = STOP_TIMEOUT_S) -> None:
        self.stack = stack
        self.name = name
        self.control_timeout = control_timeout
        self.stop_timeout = stop_timeout
        self._on_exit = on_exit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task | None = None
        self._stopped_at: float | None = None

    # --- the same API as DriverStack ---------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self.stack.session_id

    @property
    def rate(self) -> float:
        return self.stack.rate

    @rate.setter
    def rate(self, value: float) -> None:
        self.stack.rate = float(value)

    @property
    def layers(self) -> list[Layer]:
        return self.stack.layers

    @property
    def last_frame(self) -> FlameFrame | None:
        return self.stack.last_frame

    def layer(self, name: str) -> Layer:
        return self.stack.layer(name)

    def add(self, name: str, factory: DriverFactory, channels: frozenset[Channel], *, index: int | None = None,
            muted: bool = False) -> Layer:
        return self.stack.add(name, factory, channels, index=index, muted=muted)

    def move(self, name: str, index: int) -> None:
        self.stack.move(name, index)

    def mute(self, name: str, muted: bool) -> None:
        self.stack.mute(name, muted)

    async def remove(self, name: str) -> None:
        await self._on_stack(self.stack.remove(name))

    async def replace(self, name: str, factory: DriverFactory, channels: frozenset[Channel]) -> None:
        await self._on_stack(self.stack.replace(name, factory, channels))

    async def control(self, message: Control, layer: str | None = None) -> dict[str, Any]:
        try:
            return await self._on_stack(self.stack.control(message, layer=layer), timeout=self.control_timeout)
        except TimeoutError:
            raise ControlNotSupported(f"the session's drivers did not answer within {self.control_timeout:g} s "
                                      "(a driver is busy); try again shortly") from None

    def stats(self) -> StackStats:
        for _ in range(3):  # the stack's thread may change a dict while this one reads it
            try:
                return self.stack.stats()
            except RuntimeError:
                continue
        return StackStats(self.stack._frames, "running")

    def stop(self) -> None:
        """Stop now: the stack's task is cancelled on its loop (its drivers are closed)."""
        self._stopped_at = time.monotonic()
        self.stack.stop()
        task = self._task
        if task is not None:
            self.call_soon(task.cancel)

    async def close(self) -> None:
        self.stop()

    # --- running ---------------------------------------------------------------------------

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the stack's loop (at once when it does not run yet)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # closed meanwhile
            pass

    async def run(self) -> None:
        """Run the stack in its thread until it stops; returns at most ``stop_timeout`` seconds
        after ``stop()`` even when a driver never returns (its thread is then left behind)."""
        caller = asyncio.get_running_loop()
        done = caller.create_future()
        started = threading.Event()
        self._thread = threading.Thread(target=self._body, args=(caller, done, started), name=self.name, daemon=True)
        self._thread.start()
        started.wait()
        try:
            while not done.done():
                await asyncio.wait({done}, timeout=0.25)
                if self._stopped_at is not None and time.monotonic() - self._stopped_at > self.stop_timeout:
                    log.error("driver stack %s did not stop within %g s (a driver blocks); leaving its thread",
                              self.name, self.stop_timeout)
                    return
        except asyncio.CancelledError:
            self.stop()
            raise

    def _body(self, caller: asyncio.AbstractEventLoop, done: asyncio.Future, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        started.set()
        try:
            self._task = loop.create_task(self.stack.run())
            if self._stopped_at is not None:
                self._task.cancel()
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException:
            log.exception("driver stack %s failed", self.name)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                if self._on_exit is not None:
                    try:
                        self._on_exit()
                    except Exception:
                        log.exception("driver stack %s: on_exit failed", self.name)
                try:
                    caller.call_soon_threadsafe(_settle, done)
                except RuntimeError:  # the caller's loop is gone (shutdown)
                    pass

    async def _on_stack(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return await coro  # not running (yet, or any more): nothing else touches the stack
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except (TimeoutError, asyncio.CancelledError):
            future.cancel()
            raise


def _settle(done: asyncio.Future) -> None:
    if not done.done():
        done.set_result(None)


def layer_channels(driver_cls: type[Driver], requested: Sequence[str] | None) -> frozenset[Channel]:
    """The groups a layer owns: what it asks for, which must be among what its driver drives."""
    from .layers import parse_channels

    declared = frozenset(driver_cls.channels)
    if requested is None:
        return declared
    wanted = parse_channels(requested)
    extra = sorted(c.value for c in wanted - declared)
    if extra:
        raise ValueError(f"driver {driver_cls.name!r} does not drive {', '.join(extra)}; "
                         f"it drives {', '.join(sorted(c.value for c in declared))}")
    if not wanted:
        raise ValueError("a layer needs at least one channel group")
    return wanted
