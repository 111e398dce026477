"""Compiling fastgd's kernels ahead of time: ``fastgd.compile()`` and ``python -m fastgd compile``.

A fit or a prediction compiles what it needs the first time it runs on a machine (Numba's on-disk
cache keeps it; see the user guide's "Threads and the compile cache"), with a helper process
beside it that ends before it trains. Nothing is compiled in the background unless asked for:
``fastgd.compile()`` compiles every kernel of the dtypes asked for now, and
``fastgd.compile(background=True)`` starts a process that does it while the caller goes on (it
is the caller's: it may outlive the call, as asked).
"""

from __future__ import annotations

import subprocess
import sys

DTYPES = ("float32", "float64")


def compile(dtypes=DTYPES, background=False):  # noqa: A001 (the public name users call)
    """Compile every kernel of ``dtypes`` into Numba's on-disk cache (or load it from there), so
    that no later fit or prediction on this machine compiles anything.

    Parameters
    ----------
    dtypes : sequence of {"float32", "float64"}, default both
    background : bool, default False
        Start a separate process that compiles them and return at once (it runs at the lowest
        priority and may outlive this call); otherwise compile here, a helper process taking
        half of the work.

    Returns
    -------
    list of (str, float) or subprocess.Popen
        Each kernel's label and the seconds it took here, or the background process.
    """
    chosen = tuple(dtypes) if not isinstance(dtypes, str) else (dtypes,)
    unknown = [dtype for dtype in chosen if dtype not in DTYPES]
    if unknown or not chosen:
        raise ValueError(f"dtypes must be some of {list(DTYPES)}, got {list(chosen)}")
    if not isinstance(background, bool):
        raise TypeError(f"background must be a bool, got {type(background).__name__}")
    if background:
        command = [sys.executable, "-m", "fastgd", "compile", "--quiet", "--dtype", *chosen]
        if hasattr(subprocess, "BELOW_NORMAL_PRIORITY_CLASS"):  # pragma: no cover - Windows
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                creationflags=subprocess.BELOW_NORMAL_PRIORITY_CLASS,
            )
        import os

        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: os.nice(19)) if hasattr(os, "nice") else None,
        )
    from .kernels import compile as compile_module

    return compile_module.compile_all(chosen)


def prepare_fit(net) -> None:
    """Make what a fit of ``net`` needs ready in this process (loaded from the cache, or compiled,
    with a helper process compiling the passes when the cache is cold)."""
    if net.backend == "numba":
        from .kernels import compile as compile_module

        compile_module.prepare(net.dtype, "train_loop")


def prepare_entry(net) -> None:
    """Make what ``predict``, ``loss`` and ``gradients`` of ``net`` need ready in this process."""
    if net.backend == "numba":
        from .kernels import compile as compile_module

        compile_module.prepare(net.dtype, "run_passes")
