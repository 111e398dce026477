"""What a bug report needs (``show_config``)."""

from __future__ import annotations

import os
import platform
import sys

import numba
import numpy as np
from threadpoolctl import threadpool_info

from . import __version__
from ._threads import default_threads, usable_cores
from .kernels.config import FASTMATH_FLAGS

THREADING = "fastgd's own team of threads (kernels.team); no Numba threading layer is started"


def show_config(file=None) -> None:
    """Print versions, threads, BLAS, the compile cache and the relevant environment."""
    import scipy

    lines = [
        f"fastgd          {__version__}",
        f"python          {sys.version.split()[0]} ({platform.platform()})",
        f"numpy           {np.__version__}",
        f"scipy           {scipy.__version__}",
        f"numba           {numba.__version__}",
        f"cpu             {cpu_name()} ({os.cpu_count()} logical cores, {usable_cores()} usable)",
        f"threads         {default_threads()} by default (FASTGD_NUM_THREADS, NUMBA_NUM_THREADS, OMP_NUM_THREADS or "
        "the usable cores; threadpool_limits caps it)",
        f"threading       {THREADING}",
        f"fastmath flags  {', '.join(sorted(FASTMATH_FLAGS))}",
        f"compile cache   {cache_status()}",
    ]
    settings = sorted(
        f"{k}={v}" for k, v in os.environ.items() if k.startswith(("NUMBA_", "FASTGD_", "OMP_", "OPENBLAS_", "MKL_"))
    )
    lines.append(f"environment     {' '.join(settings) or '(no NUMBA_/FASTGD_/OMP_/OPENBLAS_/MKL_ variables)'}")
    import scipy.linalg.cython_blas  # noqa: F401  (the BLAS the kernels call, so that it is listed)

    for pool in threadpool_info():
        lines.append(
            f"threadpool      {pool.get('internal_api')} {pool.get('version')} threads={pool.get('num_threads')} "
            f"{pool.get('filepath')}"
        )
    print("\n".join(lines), file=file)


def cache_status() -> str:
    """Whether Numba's on-disk cache keeps the kernels, and where (Numba's documented rules:
    ``NUMBA_CACHE_DIR`` if set, else the ``__pycache__`` beside the sources when writable, else
    a user-wide folder)."""
    from .kernels import jit, stamps

    if not jit.CACHE:
        why = (
            "FASTGD_NUMBA_CACHE=0"
            if not jit.config.CACHE_REQUESTED
            else "NUMBA_DISABLE_JIT"
            if jit.config.DISABLE_JIT
            else (f"sources newer than their stamps: {', '.join(stamps.stale())}")
        )
        return f"off ({why})"
    if os.environ.get("NUMBA_CACHE_DIR"):
        return f"on: {os.environ['NUMBA_CACHE_DIR']} (NUMBA_CACHE_DIR)"
    folder = os.path.join(stamps.FOLDER, "__pycache__")
    return (
        f"on: {folder}"
        if os.access(stamps.FOLDER, os.W_OK)
        else "on: Numba's user-wide cache folder (the package's is read-only)"
    )


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
