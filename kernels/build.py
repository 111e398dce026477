"""What the kernels compile, and where: every compile target (each piece, pass and stage for each
dtype, the training loop and the entry points), compiling those a fit needs with a helper process
beside this one when the cache is cold, and compiling everything ahead of time.

A machine compiles each target once: Numba caches it on disk (``cache=True``), and none depends
on a network's configuration, so a new configuration needs at most the few pieces it has not
used before. The first fit on a machine (an empty cache) needs the loop, the passes and a
handful of pieces: ``prepare_fit`` compiles the loop here while a helper process compiles the
rest into the cache, then loads them (Numba compiles one function at a time per process, and a
compile is Python-side work that holds the GIL: a second process is the only way to use a second
core). The helper ends before the fit trains. Nothing else is started: filling the cache with
every target is asked for, by ``python -m fastgd compile`` or ``fastgd.compile()``.

``python -m fastgd.kernels.build TARGET...`` is the helper (targets labelled as ``label``).

Ctrl-C while this process compiles (``Interrupts``) is held until the target under way is
compiled, then raised; while it only waits for the helper, at once; either way the helper is
ended before the ``KeyboardInterrupt`` leaves (nothing is left compiling behind it).

Environment: ``FASTGD_COMPILE_HELPER=0`` compiles everything in the fitting process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import NamedTuple

import numpy as np
from numba import types

from . import activations, config, losses, optim
from .jit import CACHE

HELPER_TIMEOUT = 600.0  # seconds a fit waits for its helper before compiling the rest itself
# A cache hit of a small target takes ~1-3 ms, its compile ~20-60 ms: a probe slower than this
# means the cache does not hold this process's code (a first fit, or new sources).
COLD_PROBE_SECONDS = 0.012


class Target(NamedTuple):
    """One thing to compile: a piece (``kind`` "activation", "loss", "update" or "product"; ``name``
    its code or path), a pass (``kind`` "pass", ``name`` "forward"/"backward"), a stage (``kind``
    "stage", ``name`` its kind, with "-stub" for its stub), the loop (``kind`` "loop") or the
    entry point (``kind`` "entry"), for ``dtype``."""

    kind: str
    name: str
    dtype: str

    def label(self) -> str:
        return f"{self.kind}:{self.name}:{self.dtype}"

    @classmethod
    def parse(cls, text: str) -> "Target":
        kind, name, dtype = text.split(":")
        return cls(kind, name, dtype)


PIECE_KINDS = ("activation", "loss", "update", "product")


def _name(kind, value):
    # A piece's name in a label: a table's code, or a product path.
    return str(int(value)) if kind in ("activation", "loss", "update") else str(value)


def piece_targets(dtype, activation_codes=(), loss=None, optimizer=None, paths=()) -> list:
    dtype = np.dtype(dtype).name
    found = [Target("activation", _name("activation", code), dtype) for code in sorted(set(int(c) for c in activation_codes))]
    found += [Target("loss", _name("loss", loss), dtype)] if loss is not None else []
    found += [Target("update", _name("update", optimizer), dtype)] if optimizer is not None else []
    found += [Target("product", path, dtype) for path in paths]
    return found


def fit_targets(architecture, loss, optimizer, dtype, stages=()) -> list:
    """Everything a fit of this network needs but the loop: its pieces, both passes, its
    stages (and the others' stubs)."""
    from .layout import paths
    from .stages import COMPILED_KINDS

    found = piece_targets(dtype, architecture.layers["activation"], loss, optimizer, paths(architecture, dtype))
    found += [Target("pass", kind, np.dtype(dtype).name) for kind in ("forward", "backward")]
    found += [Target("stage", kind if kind in stages else f"{kind}-stub", np.dtype(dtype).name) for kind in COMPILED_KINDS]
    found.append(Target("stage", "python-stub", np.dtype(dtype).name))
    return found


def entry_targets(architecture, loss, dtype) -> list:
    """What the entry points (predict, loss, gradients) of this network need but their own
    compiled call: its pieces and both passes."""
    from .layout import paths

    found = piece_targets(dtype, architecture.layers["activation"], loss, None, paths(architecture, dtype))
    return found + [Target("pass", kind, np.dtype(dtype).name) for kind in ("forward", "backward")]


def catalog(dtypes=("float32", "float64")) -> list:
    """Every compile target for ``dtypes``."""
    from .stages import COMPILED_KINDS

    found = []
    for dtype in dtypes:
        found += [Target("loop", "loop", dtype), Target("entry", "passes", dtype)]
        found += [Target("pass", kind, dtype) for kind in ("forward", "backward")]
        found += [Target("stage", name, dtype) for kind in COMPILED_KINDS for name in (kind, f"{kind}-stub")]
        found.append(Target("stage", "python-stub", dtype))
        found += piece_targets(dtype, activations.SPECS, None, None, ("loops", "tiles", "blas"))
        found += [Target("loss", _name("loss", code), dtype) for code in losses.SPECS]
        found += [Target("update", _name("update", code), dtype) for code in optim.SPECS]
    return found


def make_ready(target: Target) -> float:
    """Compile ``target`` in this process (or load it from the cache); returns the seconds."""
    from . import phases, pieces, stages

    start = time.perf_counter()
    if target.kind in PIECE_KINDS:
        pieces.compiled(target.kind, target.name if target.kind == "product" else int(target.name), target.dtype)
    elif target.kind == "pass":
        phases.compiled(target.name, target.dtype)
    elif target.kind == "stage":
        kind, _, stub = target.name.partition("-")
        stages.compiled(kind, target.dtype, stub=bool(stub))
    elif target.kind == "loop":
        compile_loop(target.dtype)
    elif target.kind == "entry":
        compile_entry(target.dtype)
    else:
        raise ValueError(f"unknown target {target.label()!r}")
    return time.perf_counter() - start


class Placeholder(types.WrapperAddressProtocol):
    """A first-class function of a given signature that is never called (Numba's documented
    Wrapper Address Protocol): it lets a compiled function be compiled for its argument types
    before the functions it will be given exist, in a call that runs none of them."""

    def __init__(self, signature):
        self._signature = signature

    def __wrapper_address__(self):
        return -1  # (Numba's sentinel for "no function": never called)

    def signature(self):
        return self._signature


def _placeholders(dtype):
    from . import phases, pieces, stages

    # Numba learns the type of a Wrapper Address Protocol object when its CPU target is first
    # used (a first compile or cache load): a tiny stub the loop needs anyway comes first.
    stages.compiled("python", dtype, stub=True)
    one = Placeholder

    dtype = np.dtype(dtype)
    product = one(pieces.signature("product", dtype))
    bundle = pieces.Pieces(tuple(one(pieces.signature("activation", dtype)) for _ in activations.SPECS),
                           tuple(one(pieces.signature("loss", dtype)) for _ in losses.SPECS), product, product, product)  # fmt: skip
    updates = tuple(one(pieces.signature("update", dtype)) for _ in optim.SPECS)
    passes = phases.Phases(*(one(phases.signature(kind, dtype)) for kind in phases.Phases._fields))
    bound = stages.Stages(*(one(stages.signature(kind, dtype)) for kind in stages.Stages._fields))
    return bundle, updates, passes, bound


def compile_loop(dtype) -> None:
    """Compile (or load) the training loop for ``dtype`` without any of the functions it calls:
    a call of zero epochs, given placeholders of their types."""
    from . import train
    from .stages import readonly, sample_bundles

    if config.DISABLE_JIT:
        return
    bundle, updates, passes, bound = _placeholders(dtype)
    architecture, state, data, work, settings, end = sample_bundles(dtype)
    arguments = (passes, bundle, updates, bound, architecture, state, readonly(data), work, settings._replace(epochs=0), end)
    _first_call(train, "train_loop", arguments)


def compile_entry(dtype) -> None:
    """Compile (or load) the entry points' call (``passes.run_passes``) for ``dtype``: a call
    over zero rows, given placeholders (it returns before calling any)."""
    from . import layout
    from . import passes as passes_module
    from .pieces import quiet

    if config.DISABLE_JIT:
        return
    bundle, _, passes, _ = _placeholders(dtype)
    architecture = layout.make_architecture((1, 1), [0])
    vector = np.zeros(1, dtype)
    buffers = layout.make_buffers(architecture, 1, dtype)
    from . import kit as kit_module

    with quiet():
        kit = _cached_call(kit_module, "make_kit", lambda make_kit: make_kit(passes, bundle))
    _first_call(passes_module, "run_passes", (kit, architecture, vector, vector, vector, 0, vector, vector, buffers, -2, 0.0, 0.0, 0, -1, 0))


def _first_call(module, name, arguments):
    # The first call of kernel ``module.name`` (with one thread), which compiles it or loads it
    # from the cache; an unreadable cache entry is replaced, for this process, by a copy of the
    # kernel that does not use the cache (every caller looks it up in its module).
    from . import layout, team
    from .pieces import quiet

    with quiet():
        _cached_call(module, name, lambda kernel: team.run_team(kernel, arguments, 1, layout.make_control()))


def _cached_call(module, name, call):
    # ``call(module.name)``: the first call of a cached kernel, which compiles it or loads it from
    # the cache. An unreadable cache entry is replaced, for this process, by a copy of the kernel
    # that does not use the cache (every caller looks it up in its module), and called again.
    from .jit import is_cache_read_error, unreadable_entry, without_cache

    try:
        return call(getattr(module, name))
    except Exception as error:
        if not is_cache_read_error(error):
            raise
        unreadable_entry(getattr(module, name), error)
        setattr(module, name, without_cache(getattr(module, name)))
        return call(getattr(module, name))


class Interrupts:
    """Context manager: Ctrl-C (SIGINT) while this process compiles, raised between targets.

    A ``KeyboardInterrupt`` raised inside a compile is not safe: LLVM hands the object code it
    emits to Python through ctypes callbacks (llvmlite's object cache), and an exception raised
    in one of those is printed ("Exception ignored on calling ctypes callback function") and
    dropped: the Ctrl-C was lost and the fit trained on, or Numba, left without the object
    code, failed the compile with ``RuntimeError: no compiled object yet``. So, in the main
    thread with Python's default handler in place, the first SIGINT is held until the target
    under way is compiled (``check``, called after each, raises it; leaving raises it too); a
    second one raises at once (the way out of a long compile, at that risk); while ``waiting``
    (for the helper process, no compile here) it raises at once.
    """

    def __init__(self):
        self.pending = False
        self.waiting = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.waiting or self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def check(self) -> None:
        """Raise the Ctrl-C held since the last check, if any."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def __exit__(self, exc_type, exc_value, traceback):
        if self._previous is not None:
            # (signal.signal runs a pending handler first: a SIGINT that came just now is held)
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self.pending and exc_value is None:
            self.pending = False
            raise KeyboardInterrupt
        return False


def _end(process) -> None:
    # End a helper process this one no longer waits for (a Ctrl-C, an error): nothing is left
    # compiling behind a KeyboardInterrupt. (Numba writes each cache entry to a temporary file
    # and renames it: a killed helper leaves no torn entry.)
    if process is not None and process.poll() is None:
        process.kill()
        process.communicate()


# What this process has compiled or loaded through ``prepare``: (target label, seconds).
PREPARED = []
_READY = set()


def _probe_is_cold(dtype) -> bool:
    # Whether Numba's cache lacks this process's code: a tiny target loaded after Numba's own
    # start-up (the first target of a process pays that, whatever the cache holds).
    from .stages import compiled

    compiled("python", dtype, stub=True)
    start = time.perf_counter()
    compiled("condition", dtype, stub=True)
    return time.perf_counter() - start > COLD_PROBE_SECONDS


def _helper_allowed() -> bool:
    return CACHE and config.env_flag("FASTGD_COMPILE_HELPER", True) and bool(sys.executable) and not config.DISABLE_JIT


def prepare(targets, local=()) -> None:
    """Make ``targets`` and ``local`` ready in this process: loaded from the cache, or compiled.
    When the cache is cold, a helper process compiles ``targets`` into the cache while this one
    compiles ``local`` (the loop, or the entry point: the longest), then this one loads them;
    the helper has ended when this returns."""
    targets = [target for target in targets if target.label() not in _READY]
    local = [target for target in local if target.label() not in _READY]
    if not targets and not local:
        return
    helper = None
    dtype = (local or targets)[0].dtype
    with Interrupts() as interrupts:
        try:
            if _helper_allowed() and len(targets) > 2 and _probe_is_cold(dtype):
                interrupts.check()
                try:
                    # (stderr is read to the end by communicate: a full pipe would stall the helper)
                    helper = subprocess.Popen([sys.executable, "-m", "fastgd.kernels.build", *(t.label() for t in targets)],
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                              env=_child_environment())  # fmt: skip
                except OSError:
                    helper = None
            for target in local:
                _ready(target)
                interrupts.check()
            if helper is not None:
                interrupts.waiting = True
                try:
                    helper.communicate(timeout=HELPER_TIMEOUT)
                except subprocess.TimeoutExpired:
                    _end(helper)
                interrupts.waiting = False
                # Whatever the helper did not manage is compiled here as it is loaded.
            for target in targets:
                _ready(target)
                interrupts.check()
        except BaseException:
            # A Ctrl-C (or an error) while the helper compiles: it ends too, rather than go on
            # compiling behind the KeyboardInterrupt (and keep a core busy for a minute).
            _end(helper)
            raise


def _ready(target):
    seconds = make_ready(target)
    PREPARED.append((target.label(), seconds))
    _READY.add(target.label())


def _child_environment() -> dict:
    # The child finds the same cache as this process (the same environment) and starts no
    # helper of its own.
    environment = dict(os.environ)
    environment["FASTGD_COMPILE_HELPER"] = "0"
    return environment


def compile_all(dtypes=("float32", "float64"), out=None) -> list:
    """Compile (or load) every target of ``dtypes``, a helper process taking half of them;
    returns ``[(target, seconds)]`` and prints a line each to ``out``."""
    everything = catalog(dtypes)
    remote = everything[1::2] if _helper_allowed() else []
    process = None
    results = []
    with Interrupts() as interrupts:  # (Ctrl-C: between targets, the helper ended; see prepare)
        try:
            if remote:
                try:
                    process = subprocess.Popen([sys.executable, "-m", "fastgd.kernels.build", *(t.label() for t in remote)],
                                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                               env=_child_environment())  # fmt: skip
                except OSError:
                    remote = []
            for target in everything:
                if target in remote:
                    continue
                results.append((target, make_ready(target)))
                _report(results[-1], out)
                interrupts.check()
            if process is not None:
                interrupts.waiting = True
                try:
                    output, _ = process.communicate(timeout=HELPER_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    output, _ = process.communicate()
                interrupts.waiting = False
                seconds = dict(line.rsplit(" ", 1) for line in output.splitlines() if line.count(":") == 2)
                for target in remote:
                    loaded = make_ready(target)  # the helper's entry, or compiled here if it failed
                    results.append((target, float(seconds.get(target.label(), loaded))))
                    _report(results[-1], out)
                    interrupts.check()
        except BaseException:
            _end(process)
            raise
    return results


def _report(result, out):
    target, seconds = result
    if out is not None:
        print(f"  {target.dtype:<8} {target.kind:<10} {target.name:<14} {seconds:7.2f} s", file=out, flush=True)


def main(argv=None) -> int:
    for text in list(sys.argv[1:] if argv is None else argv):
        print(f"{text} {make_ready(Target.parse(text)):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
