"""What the kernels compile, and where: every compile target (each piece for each dtype, the
training loop and its condition stage for each dtype), which of them the cache holds, and
compiling those a fit needs with a helper process beside this one.

A machine compiles each target once: they are cached on disk (``compat.GuardedCache``), and
none depends on a network's configuration, so a new configuration needs at most a few pieces
it has not used before. The first fit on a machine (an empty cache) needs the loop and a
handful of pieces: ``prepare`` compiles the loop here while a helper process compiles the
pieces into the cache, then loads them (Numba compiles one function at a time per process, and
a compile is Python-side work that holds the GIL: a second process is the only way to use a
second core). After a fit that compiled anything, ``start_background`` fills the cache with
every other target in a background process at the lowest priority, so that the next setting
tried (another activation, optimizer, dtype...) finds its pieces cached; it never changes what a
running fit computes (the loop binds its pieces when a fit starts).

``python -m fastgd compile`` compiles every target in the foreground (``compile_all``).
``python -m fastgd.kernels.build TARGET...`` is the helper (targets as ``kind:name:dtype``).

Environment: ``FASTGD_COMPILE_HELPER=0`` compiles everything in the fitting process;
``FASTGD_BACKGROUND_COMPILE=0`` never starts the background fill.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np

from . import compat, layout, pieces
from .config import env_flag

HELPER_TIMEOUT = 600.0  # seconds a fit waits for its helper before compiling the rest itself


class Target(NamedTuple):
    """One thing to compile: a piece (``name`` from ``pieces.PIECES``), the training loop
    (``"loop"``) or one of its stages compiled for the loop's bundles (``"condition"``,
    ``"monitor"``), for ``dtype``."""

    kind: str  # "piece", "loop" or "stage"
    name: str
    dtype: str

    def label(self) -> str:
        return f"{self.kind}:{self.name}:{self.dtype}"

    @classmethod
    def parse(cls, text: str) -> "Target":
        kind, name, dtype = text.split(":")
        return cls(kind, name, dtype)


def sample_bundles(dtype):
    """(state, data, work, settings, end) of the types every fit in ``dtype`` uses (tiny sizes)."""
    from .train import readonly

    dtype = np.dtype(dtype)
    meta = layout.make_meta((1, 1), [0])
    n_params = layout.parameter_count(meta)
    state = layout.TrainState(np.zeros(n_params, dtype), np.zeros((1, n_params), dtype), np.zeros(1, np.int64))
    data = readonly(layout.Data(np.zeros((1, 1), dtype), np.zeros((1, 1), dtype), np.ones(1, dtype)))
    work = layout.make_work(meta, 1, 1, 1, 1, dtype)
    settings = layout.make_settings(meta, 1, 0, 1, False, 0, 0, 1, 0.1, np.zeros(5), 0, np.zeros(2), 0.0, 0.0)
    return state, data, work, settings, layout.make_epoch_end(meta, dtype, 1)


def _dispatcher_and_types(target: Target):
    from . import condition, epoch_end, train

    if target.kind == "piece":
        piece = pieces.PIECES[target.name]
        return piece.dispatcher, pieces.argument_types(piece.kind, target.dtype)
    state, data, work, settings, end = sample_bundles(target.dtype)
    if target.kind == "loop":
        return train.train_loop, train.loop_types(state, data, work, settings, end)
    if target.name == "monitor":
        return epoch_end.monitor, pieces.argument_types("monitor", target.dtype, (compat.typeof(end),))
    bundles = (compat.typeof(work), compat.typeof(settings))
    return condition.condition, pieces.argument_types("condition", target.dtype, bundles)


def catalog(dtypes=("float32", "float64")) -> list:
    """Every compile target for ``dtypes``: the loop, its stage, then every piece."""
    found = []
    for dtype in dtypes:
        found += [Target("loop", "loop", dtype), Target("stage", "condition", dtype), Target("stage", "monitor", dtype)]
        found += [Target("piece", name, dtype) for name in pieces.PIECES]
    return found


def is_cached(target: Target) -> bool:
    """Whether the on-disk cache holds ``target``, fresh (without loading it)."""
    dispatcher, argtypes = _dispatcher_and_types(target)
    return compat.is_cached(dispatcher, argtypes)


def compile_target(target: Target) -> float:
    """Compile ``target`` in this process (or load it from the cache); returns the seconds."""
    start = time.perf_counter()
    if target.kind == "piece":
        pieces.address(target.name, target.dtype)
    else:
        dispatcher, argtypes = _dispatcher_and_types(target)
        if target.kind == "loop":
            compat.compile_exact(dispatcher, argtypes)
        else:
            compat.piece_address(dispatcher, argtypes)
    return time.perf_counter() - start


def _helper_allowed() -> bool:
    return compat.CACHE_USABLE and env_flag("FASTGD_COMPILE_HELPER", True) and bool(sys.executable)


def _helper_command(targets) -> list:
    return [sys.executable, "-m", "fastgd.kernels.build", *(target.label() for target in targets)]


# What this process has compiled (not loaded) so far, in order: (target label, seconds).
COMPILED = []


def prepare(dtype, names, loop=False, stages=()) -> None:
    """Make the loop (``loop``), its ``stages`` ("condition", "monitor") and the pieces ``names``
    of ``dtype`` ready in this process: loaded from the cache, or compiled. When several targets
    are missing (``HELPER_MIN_SECONDS`` of compiling by ``_COST``), a helper process compiles
    about half of them (``_split``: this process keeps the loop, the longest) into the cache
    while this one compiles the rest, then this one loads the helper's."""
    dtype = np.dtype(dtype).name
    wanted = ([Target("loop", "loop", dtype)] if loop else []) + [Target("stage", stage, dtype) for stage in stages]
    wanted += [Target("piece", name, dtype) for name in names]
    missing = [target for target in wanted if compat.CACHE_USABLE and not is_cached(target)]
    helper = None
    local = missing
    if _helper_allowed() and len(missing) > 2 and sum(map(_cost, missing)) >= HELPER_MIN_SECONDS:
        local, remote = _split(missing)
        try:
            # (stderr is read to the end by communicate: a full pipe would stall the helper)
            helper = subprocess.Popen(_helper_command(remote), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, env=_child_environment())  # fmt: skip
        except OSError:
            helper, local = None, missing
    for target in local:
        COMPILED.append((target.label(), compile_target(target)))
    if helper is not None:
        try:
            helper.communicate(timeout=HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        # Whatever the helper did not manage is compiled here when it is loaded.
    if missing:
        start_background()


def _child_environment() -> dict:
    # The child finds the same cache as this process (the same environment, the same rules).
    environment = dict(os.environ)
    environment["FASTGD_BACKGROUND_COMPILE"] = "0"
    environment["FASTGD_COMPILE_HELPER"] = "0"
    return environment


def start_background() -> bool:
    """Start filling the cache with every target it lacks, in a background process at the
    lowest priority (once per process; never with the cache off or ``FASTGD_BACKGROUND_COMPILE=0``).
    Returns whether one was started."""
    global _BACKGROUND
    if _BACKGROUND is not None or not compat.CACHE_USABLE or not env_flag("FASTGD_BACKGROUND_COMPILE", True) or not sys.executable:
        return False
    command = [sys.executable, "-m", "fastgd.kernels.build", "--all", "--background"]
    try:
        _BACKGROUND = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       env=_child_environment(), start_new_session=True)  # fmt: skip
    except OSError:
        _BACKGROUND = False
        return False
    return True


_BACKGROUND = None


def compile_all(dtypes=("float32", "float64"), out=None, skip_cached=False, helper=True) -> list:
    """Compile (or load) every target of ``dtypes``; returns ``[(target, seconds, was_cached)]``
    and prints a line each to ``out``. With ``helper``, a helper process compiles every other
    missing target (the two processes use two cores), and this one then loads them."""
    results, missing = [], []
    for target in catalog(dtypes):
        if is_cached(target):
            if not skip_cached:
                results.append((target, compile_target(target), True))
                _report(results[-1], out)
        else:
            missing.append(target)
    remote = _split(missing)[1] if helper and _helper_allowed() and len(missing) > 4 else []
    process = None
    if remote:
        try:
            process = subprocess.Popen(_helper_command(remote), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True, env=_child_environment())  # fmt: skip
        except OSError:
            remote = []
    for target in missing:
        if target in remote:
            continue
        results.append((target, compile_target(target), False))
        _report(results[-1], out)
    if process is not None:
        output, _ = process.communicate(timeout=HELPER_TIMEOUT)
        seconds = dict(line.rsplit(" ", 1) for line in output.splitlines() if line.count(":") == 2)
        for target in remote:
            loaded = compile_target(target)  # the helper's entry, or compiled here if it failed
            results.append((target, float(seconds.get(target.label(), loaded)), False))
            _report(results[-1], out)
    return results


# Rough compile seconds of a target (the benchmark machine's order of magnitude, from Numba's
# compile events), to share the work out; a helper process first spends about HELPER_START of
# them importing Numba and fastgd, so a helper is started only for HELPER_MIN_SECONDS of work.
_COST = {"loop": 6.0, "stage": 1.5, "forward_pass": 1.4, "backward_pass": 1.5}
PIECE_COST = 0.5
HELPER_START = 1.0
HELPER_MIN_SECONDS = 3.0


def _cost(target) -> float:
    return _COST.get(target.kind, _COST.get(target.name, PIECE_COST))


def _split(targets):
    # Two lists of about the same wall time, the second for the helper (which starts
    # HELPER_START late): the longest first, each to the list that would finish first.
    lists, loads = ([], []), [0.0, HELPER_START]
    for target in sorted(targets, key=lambda t: -_cost(t)):
        sooner = 0 if loads[0] <= loads[1] else 1
        lists[sooner].append(target)
        loads[sooner] += _cost(target)
    return lists


def _report(result, out):
    target, seconds, cached = result
    if out is not None:
        print(f"  {target.dtype:<8} {target.kind:<6} {target.name:<26} {seconds:7.2f} s{'  (cached)' if cached else ''}",
              file=out, flush=True)  # fmt: skip


def _lock(path):
    # An exclusive lock on ``path`` held for this process's life, or None if another has it.
    import fcntl

    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--all" in argv:
        if "--background" in argv:
            os.nice(19) if hasattr(os, "nice") else None
            folder = compat.cache_directory()
            if not os.path.isdir(folder):
                return 0
            lock = _lock(os.path.join(folder, "fastgd-background.lock"))
            if lock is None:
                return 0  # another background fill is at work on this cache
        compile_all(skip_cached=True, helper=False)
        return 0
    for text in argv:
        print(f"{text} {compile_target(Target.parse(text)):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
