"""Benchmark results as data: ``python -m fastgd bench ... --json PATH``.

One writer serves every kind of run (``write_results(path, kind, rows)``): it records the rows
as the run returned them, every figure of each, beside what is needed to read and repeat them:
the date and time, the exact command, the machine (CPU name, its instruction-set features,
cores), the versions of Python, fastgd and its dependencies, the BLAS NumPy calls, and the
fastgd commit when it runs from a git checkout. The documentation's performance page is drawn
from such files (``docs/performance/*.json``), so a re-run is one command and one file, never
hand-edited prose.

File layout (``format`` 1), a JSON object:

``format``, ``kind`` (which bench mode: ``"workloads"`` for the default table, ``"ranks"``,
``"out-of-core"``...), ``date`` (ISO 8601 with the UTC offset), ``command`` (a shell-quoted line),
``machine`` (``cpu``, ``features``, ``simd``, ``logical_cores``, ``usable_cores``, ``platform``),
``versions`` (library name -> version), ``blas`` (NumPy's, from threadpoolctl), ``fastgd_commit``
(``{"sha", "dirty"}`` or null), ``context`` (whatever the mode adds, e.g. the workloads' definitions)
and ``rows`` (a list of objects).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping

import numpy as np

__all__ = ["FORMAT", "write_results", "read_results", "machine", "versions", "workload_definitions"]

FORMAT = 1

# The instruction-set features that decide which machine code runs (the rest of /proc/cpuinfo's
# flags are recorded too, but these are what a reader of a result compares).
SIMD_FEATURES = (
    "sse2",
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "asimd",
    "sve",
)

# Recorded when importable; a peer run by another environment reports its own version in its rows.
LIBRARIES = (
    "numpy",
    "numba",
    "llvmlite",
    "scipy",
    "threadpoolctl",
    "sklearn",
    "torch",
    "jax",
    "jaxlib",
    "optax",
    "mpi4py",
)


def _cpu_features() -> list:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return sorted(line.split(":", 1)[1].split())
    except OSError:
        pass
    return []


def machine() -> dict:
    """The machine a result was measured on: CPU name and features, cores, platform."""
    from .._threads import usable_cores
    from ..diagnostics import cpu_name

    features = _cpu_features()
    return dict(
        cpu=cpu_name(),
        simd=[f for f in SIMD_FEATURES if f in features],
        features=features,
        logical_cores=os.cpu_count(),
        usable_cores=usable_cores(),
        platform=platform.platform(),
        machine=platform.machine(),
    )


def versions() -> dict:
    """Versions of Python, fastgd and the libraries a run may use, where installed. Peers are
    looked up by distribution metadata (importing PyTorch or JAX here would cost seconds)."""
    from importlib import metadata

    from .. import __version__

    found = {"python": platform.python_version(), "fastgd": __version__}
    distributions = {"sklearn": "scikit-learn"}
    for library in LIBRARIES:
        try:
            found[library] = metadata.version(distributions.get(library, library))
        except metadata.PackageNotFoundError:
            continue
    return found


def _blas() -> list:
    from threadpoolctl import threadpool_info

    return [
        dict(
            internal_api=pool.get("internal_api"),
            version=pool.get("version"),
            architecture=pool.get("architecture"),
            threading_layer=pool.get("threading_layer"),
            num_threads=pool.get("num_threads"),
        )
        for pool in threadpool_info()
        if pool.get("user_api") == "blas"
    ]


def _commit():
    """The checkout's commit and whether it has local changes, or None outside a git checkout."""
    folder = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        sha = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(sha=sha.stdout.strip(), dirty=bool(status.stdout.strip()))


def workload_definitions(names) -> dict:
    """The definitions of the named workloads (``workloads.WORKLOADS``), for a result's context."""
    from dataclasses import asdict

    from .workloads import WORKLOADS

    return {
        name: dict(
            asdict(WORKLOADS[name]), steps=WORKLOADS[name].steps, flops_per_step=WORKLOADS[name].flops_per_step()
        )
        for name in names
        if name in WORKLOADS
    }


def _plain(value):
    """JSON-ready: NumPy scalars and arrays as numbers and lists, tuples as lists, NaN and
    infinities as null (JSON has no such numbers)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_rows(rows) -> list:
    """A run's result as a list of row objects: a list of dicts as it is; a mapping (the modes
    that return {label: figures}) as one row per entry, its key under ``name``."""
    if isinstance(rows, Mapping):
        return [
            dict(name=key, **value) if isinstance(value, Mapping) else dict(name=key, value=value)
            for key, value in rows.items()
        ]
    if isinstance(rows, (list, tuple)):
        return list(rows)
    raise TypeError(f"rows must be a list of dicts or a mapping, got {type(rows).__name__}")


def write_results(path, kind, rows, command=None, context=None) -> dict:
    """Write one benchmark run to ``path`` as JSON (atomically) and return what was written.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist. An existing file is replaced.
    kind : str
        Which bench mode produced the rows (``"workloads"``, ``"ranks"``, ``"out-of-core"``...).
    rows : list of dict or mapping
        The run's figures as the mode returned them; a mapping becomes one row per key (``name``).
    command : sequence of str, optional
        The command's arguments after ``python -m fastgd`` (default: this process's
        ``sys.argv[1:]``), recorded shell-quoted.
    context : mapping, optional
        What else the mode knows about the run (settings, definitions), recorded as ``context``.

    Returns
    -------
    dict
        The object written.
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise ValueError(f"path: the folder {folder} does not exist")
    arguments = list(sys.argv[1:] if command is None else command)
    record = dict(
        format=FORMAT,
        kind=kind,
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        command=shlex.join(["python", "-m", "fastgd", *arguments]),
        machine=machine(),
        versions=versions(),
        blas=_blas(),
        fastgd_commit=_commit(),
        context=_plain(context or {}),
        rows=_plain(_as_rows(rows)),
    )
    text = json.dumps(record, indent=1, allow_nan=False) + "\n"
    temporary = f"{os.fspath(path)}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
    return record


def read_results(path) -> dict:
    """Read a file ``write_results`` wrote, checking its format and required fields."""
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    missing = [
        field for field in ("format", "kind", "date", "command", "machine", "versions", "rows") if field not in record
    ]
    if missing:
        raise ValueError(f"{path}: not a fastgd bench result (missing {', '.join(missing)})")
    if record["format"] != FORMAT:
        raise ValueError(f"{path}: result format {record['format']!r}, this fastgd reads format {FORMAT}")
    return record
