"""Compiling the kernels ahead of time (``python -m fastgd compile``, ``fastgd.compile()``), and
what a fit waits for when it compiles.

Nothing depends on a network's configuration: per dtype there are two compiled entry points, the
training loop (``train.train_loop``) and the entry of ``predict``/``loss``/``gradients``
(``network.run_passes``), and the two passes they call by address (``passes.piece``: forward
and backward), each holding everything it calls. Numba caches all four on disk
(``cache=True``), so a machine compiles each once. ``compile_all`` makes them ready for the dtypes
asked, one dtype in a helper process (``python -m fastgd.kernels.compile DTYPE``) while this one
compiles the other: Numba compiles one function at a time per process, with the GIL held, so a
second process is the only way to use a second core.

Ctrl-C while this process compiles (``Interrupts``) is held until the function under way is
compiled, then raised; while it only waits for the helper, at once; either way the helper is ended
before the ``KeyboardInterrupt`` leaves. ``CompileLog`` records, through Numba's event API
(Numba's documentation, "Notes on the Event API": ``numba.core.event``), the seconds each compiled
function took and, within them, Numba's type inference and lowering.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import numpy as np

from . import config, epoch_end, layout
from .jit import CACHE, first_call, kernel

HELPER_TIMEOUT = 600.0  # seconds compile_all waits for its helper before compiling the rest itself
DTYPES = ("float32", "float64")
ENTRIES = ("train_loop", "run_passes", "forward", "backward")


def _samples(dtype):
    # The smallest bundles of each type a fit of ``dtype`` passes.
    from .optim import hyper_vector
    from .train import _readonly

    dtype = np.dtype(dtype)
    architecture = layout.make_architecture((1, 1), [0])
    n_params = architecture.n_params
    state = layout.TrainState(np.zeros(n_params, dtype), np.zeros((1, n_params), dtype), np.zeros(1, np.int64))
    data = _readonly(layout.Data(np.zeros((1, 1), dtype), np.zeros((1, 1), dtype), np.ones(1, dtype)))
    work = layout.make_work(architecture, 1, 1, 1, 1, dtype)
    settings = layout.make_settings(
        loss=0,
        optimizer=0,
        batch_size=1,
        lr=0.1,
        hyper=hyper_vector(0, {"lr": 0.1, "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}),
        epochs=0,
    )
    return architecture, state, data, work, settings, epoch_end.make_epoch_end(architecture, dtype, 1)


def make_ready(entry: str, dtype) -> float:
    """Compile (or load from the cache) ``entry`` (one of ``ENTRIES``) for ``dtype`` in this
    process, the loop and the entry point by a call that runs nothing (zero epochs, zero rows);
    returns the seconds."""
    from .network import Batch, Pass, run_passes
    from .passes import PIECE_KINDS, piece
    from .train import train_loop

    start = time.perf_counter()
    if entry in PIECE_KINDS:
        piece(entry, dtype)
    elif not config.DISABLE_JIT:
        architecture, state, data, work, settings, end = _samples(dtype)
        control = layout.make_control()
        if entry == "train_loop":
            first_call(train_loop, 0, 1, control, architecture, state, data, work, settings, end)
        elif entry == "run_passes":
            one = np.zeros(1, dtype=np.dtype(dtype))
            buffers = layout.make_buffers(architecture, 1, dtype)
            first_call(
                run_passes,
                0,
                1,
                control,
                architecture,
                state.params,
                one,
                Batch(one, one, one, 0, 0),
                buffers,
                Pass(-1, 0.0, False, -1, 0),
                (0.0, 0.0),
                (np.zeros(1, dtype=layout.PASS), 0, 0),
            )
        else:
            raise ValueError(f"unknown entry {entry!r}; expected one of {ENTRIES}")
    return time.perf_counter() - start


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
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
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


@kernel
def _first_probe(x):
    return x + 1


@kernel
def _probe(x):
    return x + 2


# A cache hit of a small kernel takes ~1-3 ms, its compile ~30-60 ms: a probe slower than this
# means the cache does not hold this process's code (a first fit, or new sources). The first
# kernel a process calls also pays for Numba's own start (its registries: ~0.4 s), so the probe
# timed is the second.
COLD_PROBE_SECONDS = 0.012
_READY = set()


def prepare(dtype, entry) -> None:
    """Make ``entry`` (``train_loop`` or ``run_passes``) and the passes ready for ``dtype`` in this process.
    When the cache is cold, a helper process compiles the passes into the cache while this one
    compiles ``entry`` (the passes are C functions of their own: the entry does not compile
    them), then this one loads them; the helper has ended when this returns."""
    dtype = np.dtype(dtype).name
    if config.DISABLE_JIT or (entry, dtype) in _READY:
        return
    from .passes import PIECE_KINDS, piece

    helper = None
    with Interrupts() as interrupts:
        try:
            if _helper_allowed() and not all((kind, dtype) in _READY for kind in PIECE_KINDS) and _cold():
                try:
                    # (stderr is read to the end by communicate: a full pipe would stall the helper)
                    helper = subprocess.Popen(
                        [sys.executable, "-m", "fastgd.kernels.compile", "--passes", dtype],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                except OSError:
                    helper = None
            make_ready(entry, dtype)
            _READY.add((entry, dtype))
            interrupts.check()
            if helper is not None:
                interrupts.waiting = True
                try:
                    helper.communicate(timeout=HELPER_TIMEOUT)
                except subprocess.TimeoutExpired:
                    _end(helper)
                interrupts.waiting = False
            for kind in PIECE_KINDS:  # the helper's cache entries, or compiled here
                piece(kind, dtype)
                _READY.add((kind, dtype))
                interrupts.check()
        except BaseException:
            # A Ctrl-C (or an error) while the helper compiles: it ends too, rather than go on
            # compiling behind the KeyboardInterrupt.
            _end(helper)
            raise


def _cold() -> bool:
    _first_probe(1)
    start = time.perf_counter()
    _probe(1)
    return time.perf_counter() - start > COLD_PROBE_SECONDS


def _end(process) -> None:
    # End a helper process this one no longer waits for (a Ctrl-C, an error): nothing is left
    # compiling behind a KeyboardInterrupt. (Numba writes each cache entry to a temporary file
    # and renames it: a killed helper leaves no torn entry.)
    if process is not None and process.poll() is None:
        process.kill()
        process.communicate()


def _helper_allowed() -> bool:
    return CACHE and config.env_flag("FASTGD_COMPILE_HELPER", True) and bool(sys.executable) and not config.DISABLE_JIT


def compile_all(dtypes=DTYPES, out=None) -> list:
    """Compile (or load) every entry of ``dtypes``, a helper process taking the second dtype;
    returns ``[(label, seconds)]`` (label ``entry:dtype``) and prints a line each to ``out``."""
    dtypes = [np.dtype(dtype).name for dtype in dtypes]
    remote = dtypes[1:] if _helper_allowed() and len(dtypes) > 1 else []
    process = None
    results = []
    with Interrupts() as interrupts:  # (Ctrl-C: between entries, the helper ended)
        try:
            if remote:
                try:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "fastgd.kernels.compile", *remote],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )
                except OSError:
                    remote = []
            for dtype in dtypes:
                if dtype in remote:
                    continue
                for entry in ENTRIES:
                    results.append((f"{entry}:{dtype}", make_ready(entry, dtype)))
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
                seconds = dict(line.rsplit(" ", 1) for line in output.splitlines() if line.count(":") == 1)
                for dtype in remote:
                    for entry in ENTRIES:
                        label = f"{entry}:{dtype}"
                        loaded = make_ready(entry, dtype)  # the helper's entry, or compiled here if it failed
                        results.append((label, float(seconds.get(label, loaded))))
                        _report(results[-1], out)
                        interrupts.check()
        except BaseException:
            _end(process)
            raise
    return results


def _report(result, out):
    label, seconds = result
    if out is not None:
        entry, dtype = label.split(":")
        print(f"  {dtype:<8} {entry:<12} {seconds:7.2f} s", file=out, flush=True)


class CompileLog:
    """Context manager recording what Numba compiles inside it (Numba's event API): ``functions``
    maps a function's qualified name to its own seconds (its callees' compiles taken out), and
    ``passes`` the seconds of Numba's type inference and of its lowering, which includes LLVM's
    optimisation and code generation (each pass's own, summed over functions)."""

    def __init__(self):
        self.functions, self.passes = {}, {}

    def __enter__(self):
        from numba.core import event

        log = self

        class Listener(event.Listener):
            def __init__(self):
                self.stack = []

            def on_start(self, ev):
                self.stack.append((_name(ev.data), time.perf_counter(), 0.0))

            def on_end(self, ev):
                name, started, inner = self.stack.pop()
                elapsed = time.perf_counter() - started
                log.functions[name] = log.functions.get(name, 0.0) + elapsed - inner
                if self.stack:
                    parent, parent_start, parent_inner = self.stack[-1]
                    self.stack[-1] = (parent, parent_start, parent_inner + elapsed)

        class Passes(event.Listener):
            # Each pass's own seconds: a pass that compiles another function (type inference
            # meeting a call) holds that function's passes, which count as theirs.
            def __init__(self):
                self.stack = []

            def on_start(self, ev):
                self.stack.append((time.perf_counter(), 0.0))

            def on_end(self, ev):
                started, inner = self.stack.pop()
                elapsed = time.perf_counter() - started
                if self.stack:
                    parent_start, parent_inner = self.stack[-1]
                    self.stack[-1] = (parent_start, parent_inner + elapsed)
                name = ev.data.get("name", "")
                kind = "typing" if "type_inference" in name else ("lowering" if "lowering" in name else None)
                if kind is not None:
                    log.passes[kind] = log.passes.get(kind, 0.0) + elapsed - inner

        self._listeners = [(Listener(), "numba:compile"), (Passes(), "numba:run_pass")]
        for listener, kind in self._listeners:
            event.register(kind, listener)
        return self

    def __exit__(self, *exc):
        from numba.core import event

        for listener, kind in self._listeners:
            event.unregister(kind, listener)
        return False


def _name(data) -> str:
    dispatcher = data.get("dispatcher")
    function = getattr(dispatcher, "py_func", None)
    return getattr(function, "__qualname__", str(dispatcher))


def main(argv=None) -> int:
    """``python -m fastgd.kernels.compile [--passes] DTYPE...``: compile (or load) every entry of
    each dtype, or with ``--passes`` the passes only, printing the seconds each took."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    only_passes = "--passes" in arguments
    for dtype in [argument for argument in arguments if argument != "--passes"]:
        if only_passes:
            from .passes import PIECE_KINDS, piece

            for kind in PIECE_KINDS:
                start = time.perf_counter()
                piece(kind, dtype)
                print(f"{kind}:{dtype} {time.perf_counter() - start:.3f}", flush=True)
            continue
        for entry in ENTRIES:
            print(f"{entry}:{dtype} {make_ready(entry, dtype):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
