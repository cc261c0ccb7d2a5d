"""Compiled calls kept on disk and loaded without tracing (torch's ahead-of-time precompile).

With ``torch.compile`` a process traces its function with Dynamo at the first call, every
time it starts; with the kernels in torch's caches, that tracing is most of what a restarted
worker pays (20-30 s for ``live``'s UNet on an H200). ``PrecompiledCalls`` compiles a function
of a module once per call shape with ``aot_compile`` (one whole graph), writes the result to a
file, and a later process loads that file and calls it: nothing is traced, and the kernels come
from Inductor's and Triton's caches (``compile_cache.use_compile_cache``).

The module is an argument of the compiled function: its parameters and the per-call buffers
its hooks read are read at every call, not written into the file, so other weights use the
same file. What a loaded function checks at each call are Dynamo's guards on the tensors
(shapes, dtypes, devices, strides), on grad mode and on the values the trace read (for example
the temporal carry's mode). Guards that name Python objects by identity (classes, functions,
modules and closures of the traced code) cannot be written to a file and are left out
(``serializable_guards``); in their place the folder is named after the module's layout and the
source of the code that is traced (``module_signature``, ``source_digest``), so a file is only
found by the model and code it was compiled from.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

log = logging.getLogger(__name__)

def serializable_guards(entries: Iterable[Any]) -> list[bool]:
    """A ``guard_filter_fn``: keep the guards a file can hold (tensors, grad mode, values read
    through the arguments); leave out those on globals and those that name objects by identity
    (the kinds Dynamo lists as unsupported for serialization), directly or through a guard they
    derive from."""
    from torch._dynamo.guards import CheckFunctionManager

    bad = set(CheckFunctionManager.UNSUPPORTED_SERIALIZATION_GUARD_TYPES)
    return [not (e.is_global or e.guard_type in bad or bad & set(e.derived_guard_types or ())) for e in entries]


def module_signature(module: nn.Module) -> str:
    """The layout of ``module``: its printed structure, every parameter's and buffer's name,
    shape and dtype, and the attention processors in use (weights' values are not part of it)."""
    h = hashlib.sha256(repr(module).encode())
    for name, t in (*module.named_parameters(), *module.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:{t.device.type}".encode())
    for name, m in module.named_modules():
        processor = getattr(m, "processor", None)
        if processor is not None:
            h.update(f"{name}:{type(processor).__qualname__}".encode())
    return h.hexdigest()[:16]


def source_digest(*objects: Any) -> str:
    """A digest of the source files that define ``objects`` (modules, classes, functions)."""
    h = hashlib.sha256()
    for path in sorted({inspect.getsourcefile(o) for o in objects}):
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def call_module(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``: the call compiled for a module with one input (the tiny decoder). It lives
    here, not beside its caller, so that the file its folder is named after changes only when
    the compiling does."""
    return module(x)


def _tensor_key(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), tuple(x.stride()), str(x.dtype), x.device.type)
    return repr(x)


class PrecompiledCalls:
    """``fn(module, *args)`` compiled ahead of time, one compiled function per call shape.

    ``folder``: where the compiled functions are kept (one file per call shape).
    ``state``: what besides the arguments' shapes decides the traced graph (for the UNet: the
    temporal carry's mode and the shapes of the buffers its hooks read); part of each key.
    ``backend``/``options``: torch.compile's (``{"triton.cudagraphs": True}`` is
    ``reduce-overhead``'s CUDA graphs, also applied when loading).

    The first call of a shape loads its file, or compiles and writes it; ``stats`` counts both.
    A call that cannot be compiled ahead of time (a graph break, a backend whose output cannot be
    saved) is compiled by ``torch.compile`` for this process only, and traced again at each start.
    """

    def __init__(self, fn: Callable[..., Any], folder: str | Path, *, state: Callable[[], Any] = tuple,
                 backend: str = "inductor", options: dict[str, Any] | None = None) -> None:
        self.fn, self.folder, self.state = fn, Path(folder), state
        self.backend, self.options = backend, dict(options or {})
        self._functions: dict[tuple, Any] = {}  # by signature
        # files loaded, calls compiled ahead of time (and saved), calls only this process could compile
        self.stats = {"loaded": 0, "compiled": 0, "saved": 0, "in_process": 0, "load_s": 0.0, "compile_s": 0.0}
        if hasattr(torch._dynamo.config, "enable_aot_compile"):  # off by default in torch 2.11
            torch._dynamo.config.enable_aot_compile = True

    def signature(self, args: tuple[Any, ...]) -> tuple:
        """What picks a call's compiled function: the arguments' shapes, strides, dtypes and
        devices, ``state()`` and grad mode (hashable; computed at every call)."""
        return tuple(_tensor_key(a) for a in args), self.state(), torch.is_grad_enabled()

    def key(self, args: tuple[Any, ...]) -> str:
        """The signature as a short digest: the name of its file."""
        return self._digest(self.signature(args))

    @staticmethod
    def _digest(signature: tuple) -> str:
        return hashlib.sha256(repr(signature).encode()).hexdigest()[:20]

    def path(self, key: str) -> Path:
        return self.folder / f"{self.fn.__name__}-{key}.pt"

    def __call__(self, module: nn.Module, *args: Any) -> Any:
        signature = self.signature(args)
        compiled = self._functions.get(signature)
        if compiled is None:  # the first call of this shape: its file, or compile and write it
            key = self._digest(signature)
            compiled = self._functions[signature] = self._load(key, module, args) or self._compile(key, module, args)
        return compiled(module, *args)

    @property
    def cudagraphs(self) -> bool:
        return bool(self.options.get("triton.cudagraphs"))

    def _load(self, key: str, module: nn.Module, args: tuple[Any, ...]) -> Any:
        path = self.path(key)
        if not path.exists():
            return None
        t0 = time.perf_counter()
        try:
            with open(path, "rb") as f, torch._inductor.config.patch({"triton.cudagraphs": self.cudagraphs}):
                compiled = torch.compiler.load_compiled_function(f, f_globals=self.fn.__globals__)
            matches = compiled.guard_check(module, *args)
        except Exception as e:  # a file from another torch, or cut short: compile again
            log.warning("could not load the compiled %s from %s (%s); compiling it again", self.fn.__name__, path, e)
            return None
        if not matches:
            log.warning("the compiled %s in %s does not match this call; compiling it again", self.fn.__name__, path)
            return None
        self.stats["loaded"] += 1
        self.stats["load_s"] += time.perf_counter() - t0
        return compiled

    def _compile(self, key: str, module: nn.Module, args: tuple[Any, ...]) -> Any:
        t0 = time.perf_counter()
        options = {**self.options, "guard_filter_fn": serializable_guards}
        traced = torch.compile(self.fn, fullgraph=True, dynamic=False, backend=self.backend, options=options)
        try:
            compiled = traced.aot_compile(((module, *args), {}))
        except Exception as e:  # e.g. a graph break: compile for this process only, traced at each start
            log.warning("could not compile %s ahead of time (%s: %s); compiling it for this process only",
                        self.fn.__name__, type(e).__name__, e)
            self.stats["in_process"] += 1
            return torch.compile(self.fn, dynamic=False, backend=self.backend, options=self.options or None)
        self.stats["compiled"] += 1
        self.stats["compile_s"] += time.perf_counter() - t0
        self._save(compiled, self.path(key))
        return compiled

    def _save(self, compiled: Any, path: Path) -> None:
        """Write atomically (another worker may be loading the same folder); a function that
        cannot be written still serves this process."""
        try:
            data = type(compiled).serialize(compiled).serialized_data
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}")
            partial.write_bytes(data)
            os.replace(partial, path)
            self.stats["saved"] += 1
        except Exception as e:
            log.warning("could not save the compiled %s to %s (%s); a restart compiles it again", self.fn.__name__, path, e)
