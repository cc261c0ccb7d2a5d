"""``flamecast generator --prepare``: compile what a worker will serve into the compile cache,
then exit, so that every worker start after it loads the compiled calls instead of compiling.

With ``--jobs N`` the work is split into one process per ``--warm`` profile and batch size, N
at a time. Compiling is mostly single-threaded Python (tracing, lowering, code generation) per
call shape, so a machine with many cores compiles the shapes side by side; each process loads
the models itself, and all of them write into the same cache, whose files are written whole
and then renamed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from flamecast.plugins import CommandError

from .generator import _check_backends_named, _check_device, _generator_settings

# how a job process is started: the command line's own entry point (tests start another)
JOB_COMMAND: tuple[str, ...] = (sys.executable, "-m", "flamecast.cli")


def prepare(args: argparse.Namespace, host) -> int:
    """Warm each backend up (``--backend``, default flame2video) as a worker would, print what
    was compiled or loaded, and exit. No sockets, so no keys."""
    if not args.compile:
        raise CommandError("--prepare compiles what a worker serves: give the --compile mode the worker will run with")
    if args.jobs < 1:
        raise CommandError("--jobs must be at least 1")
    _check_device(args.device)
    settings = _generator_settings(args).replace(device=args.device)
    backends = tuple(dict.fromkeys(args.backend)) or ("flame2video",)
    _check_backends_named(backends, host)
    if args.jobs > 1 and args.prepare_batch is None:
        return run_jobs(args, backends, settings)
    batches = None if args.prepare_batch is None else (args.prepare_batch,)
    for name in backends:
        print(_prepare_one(name, host.generators.get(name), settings, batches), flush=True)
    return 0


def _prepare_one(name: str, factory, settings, batches: tuple[int, ...] | None = None) -> str:
    from flamecast.plugins import GeneratorUnavailable

    t0 = time.perf_counter()
    try:
        gen = factory(settings)
    except GeneratorUnavailable as exc:
        raise CommandError(str(exc)) from None
    try:
        if not callable(getattr(gen, "compile_report", None)):
            raise CommandError(f"generator {name!r} compiles nothing; --prepare is for neural generators (flame2video)")
        try:
            if batches is None:
                gen.warm_up()
            else:
                gen.warm_up(batches=batches)
        # missing weights, a --warm entry naming no profile or a bad option (the message names the
        # entry), a batch size the generator does not serve
        except (GeneratorUnavailable, ValueError) as exc:
            raise CommandError(str(exc)) from None
        report = gen.compile_report()
    finally:
        gen.close()
    return prepared_summary(name, report, time.perf_counter() - t0)


def prepared_summary(name: str, report: dict, seconds: float) -> str:
    """What ``--prepare`` did, in lines: per warmed profile the compiled calls loaded from the
    cache or compiled and written to it, and calls that no file can hold."""
    lines = [f"{name}: compiled calls ready in {seconds:.1f} s under {report.get('cache_folder', '?')}"]
    for profile, calls in (report.get("precompiled") or {}).items():
        loaded = sum(int(c["loaded"]) for c in calls.values())
        written = sum(int(c["saved"]) for c in calls.values())
        load_s, compile_s = (sum(c[k] for c in calls.values()) for k in ("load_s", "compile_s"))
        line = (f"  {profile}: {loaded} loaded from the cache ({load_s:.1f} s), "
                f"{written} compiled and written ({compile_s:.1f} s)")
        in_process = sum(int(c["in_process"]) for c in calls.values())
        if in_process:
            line += f"; {in_process} could not be written and are compiled at every start"
        lines.append(line)
    if len(lines) == 1:
        lines.append("  nothing was compiled: --warm names no profile")
    return "\n".join(lines)


# ---- --jobs: one process per profile and batch size ----------------------------------------
@dataclass(frozen=True)
class Job:
    """One process's share: a backend, one ``--warm`` entry (None: the backend's default) and
    one batch size."""

    backend: str
    warm: str | None
    batch: int

    def label(self) -> str:
        return f"{self.backend}, {self.warm or 'default profiles'}, batch {self.batch}"


def split_jobs(backends: tuple[str, ...], warm: tuple[str, ...] | None, max_batch: int) -> list[Job]:
    """Every (backend, warm entry, batch size) a worker with these settings compiles, the largest
    batches first (they take longest)."""
    from flamecast.renderer.flame2video.generator import batch_sizes, warm_options

    for entry in warm or ():
        try:
            warm_options(entry)  # a bad entry is refused here, before any process starts
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    sizes = sorted(batch_sizes(max_batch), reverse=True)
    return [Job(b, w, n) for n in sizes for b in backends for w in (warm or (None,))]


def job_argv(args: argparse.Namespace, job: Job) -> list[str]:
    """The command line of one job: ``args``' choices, narrowed to ``job``."""
    argv = ["generator", "--prepare", "--backend", job.backend, "--device", args.device, "--compile", args.compile,
            "--max-batch", str(args.max_batch), "--prepare-batch", str(job.batch)]
    if job.warm is not None:
        argv += ["--warm", job.warm]
    if args.weights_dir:
        argv += ["--weights-dir", args.weights_dir]
    if args.compile_cache:
        argv += ["--compile-cache", args.compile_cache]
    if args.allow_random_weights:
        argv.append("--allow-random-weights")
    return argv


def _job_env(jobs: int) -> dict[str, str]:
    """The jobs share the machine's cores: Inductor's kernel-compiling workers are split between
    them unless the environment already says how many."""
    env = dict(os.environ)
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    return env


def _error_line(stderr: str) -> str:
    """A failed job's message: its ``flamecast: error:`` line, else the end of its output."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("flamecast: error: "):
            return line.removeprefix("flamecast: error: ")
    return " / ".join(lines[-3:]) or "no output"


def run_jobs(args: argparse.Namespace, backends: tuple[str, ...], settings) -> int:
    """Run ``split_jobs`` in ``args.jobs`` processes at once; print each job's summary as it
    ends. The first failure stops the jobs still running and is the command's error."""
    jobs = split_jobs(backends, settings.warm_profiles, settings.max_batch)
    env, t0 = _job_env(args.jobs), time.perf_counter()
    procs: list[subprocess.Popen] = []
    errors: list[str] = []
    stopping = threading.Event()  # set: no further job starts
    lock = threading.Lock()

    def stop_all() -> None:  # with the lock held
        stopping.set()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()

    def run_one(job: Job) -> None:
        with lock:
            if stopping.is_set():
                return
            proc = subprocess.Popen([*JOB_COMMAND, *job_argv(args, job)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)
            procs.append(proc)
        out, err = proc.communicate()
        with lock:
            if proc.returncode == 0:
                print(f"[{job.label()}] {out.strip()}", flush=True)
            elif not stopping.is_set():
                errors.append(f"{job.label()}: {_error_line(err)}")
                stop_all()

    print(f"--prepare: {len(jobs)} jobs, {min(args.jobs, len(jobs))} at a time", flush=True)
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        for future in [pool.submit(run_one, job) for job in jobs]:
            future.result()
    finally:  # also when interrupted (Ctrl-C): no job outlives the command
        with lock:
            stop_all()
        pool.shutdown(wait=True)
    if errors:
        raise CommandError(f"--prepare job {errors[0]}")
    print(f"--prepare: all {len(jobs)} jobs done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0
