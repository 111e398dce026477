"""``python -m fastgd bench``: the benchmark workloads trained side by side.

Every measurement runs in a process of its own (``worker``), rounds interleaved across the
libraries so that each sees the same machine, and the best of ``repeats`` rounds is kept. The
table gives each library's µs per step and fastgd's speed-up over it (its time divided by
fastgd's), and for fastgd the share of the GEMM roofline (the best float32 matrix product
measured in the same run) its matrix-product FLOPs reach.

Without ``peers`` the libraries are fastgd and its own NumPy backend; with ``peers`` also
PyTorch, JAX and scikit-learn (those not installed are skipped with a note; ``pip install
"fastgd[peers]"`` adds JAX and scikit-learn, PyTorch's CPU build is the user's to install).
With ``baseline`` also another installed fastgd (a release in a virtual environment of its own,
``bench --baseline PYTHON``), on the same workloads, data and initial weights, as a row of its
own labelled with its version.

``activations`` (``bench --activations``) is the activation sweep: one workload (``small``) with
each activation fastgd's table lists that a hidden layer may have, in float32 and float64, against
relu's step and against the baseline's.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

from .worker import REQUIRES
from .workloads import WORKLOADS, Workload

__all__ = ["WORKLOADS", "Workload", "run", "activations", "ranks", "out_of_core", "cold_start", "digits_accuracy"]

# A worker that takes longer than this is stopped (large with scikit-learn, three runs: ~15 s).
WORKER_TIMEOUT = 900


def available(library) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in REQUIRES.get(library, ()))


def _worker(library, workload, threads, python=None, isolated=False):
    if python is None:
        command = [sys.executable, "-m", "fastgd.bench.worker", library, workload, str(threads or 0)]
    else:  # another environment's peer: the worker file itself, the workload written to a file
        from . import worker

        # isolated (-I, the baseline): neither PYTHONPATH nor the script's folder on sys.path, so
        # that Python imports its own fastgd, never this checkout's.
        command = [python, *(["-I"] if isolated else []), worker.__file__, library, workload, str(threads or 0)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{library} on {workload} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_peer_pythons(values) -> dict:
    """``["jax=/path/to/python", ...]`` as {label: (library, python)}; the label is
    ``library@N`` for the N-th of a library (``jax@1``...)."""
    peers = {}
    for value in values or ():
        library, separator, python = value.partition("=")
        if not separator or library not in ("jax", "torch", "sklearn") or not python:
            raise ValueError(
                f"--peer-python takes LIBRARY=PYTHON with LIBRARY one of jax, torch, sklearn; got {value!r}"
            )
        if not os.access(python, os.X_OK):
            raise ValueError(f"--peer-python {library}: {python} is not an executable")
        count = sum(1 for existing, _ in peers.values() if existing == library)
        peers[f"{library}@{count + 1}"] = (library, python)
    return peers


_BASELINE_PROBE = (
    "import json, os, fastgd; "
    "print(json.dumps([fastgd.__version__, os.path.dirname(os.path.abspath(fastgd.__file__))]))"
)


def parse_baseline(python) -> dict | None:
    """``bench --baseline PYTHON``: another installed fastgd, run by ``python`` (a virtual
    environment's ``bin/python``). Returns {"python", "version", "path", "label"} (the label is
    ``fastgd VERSION``, the version that Python's fastgd reports), or None without one. Raises
    ValueError, naming ``--baseline``, when ``python`` is not an executable file or cannot import
    a fastgd."""
    import shutil
    import tempfile

    if python is None:
        return None
    found = python if os.path.isfile(python) else shutil.which(python) if python and os.sep not in python else None
    if not found or not os.access(found, os.X_OK):
        raise ValueError(
            f"--baseline {python}: not an executable file (expected another environment's Python, "
            f"e.g. /path/to/venv/bin/python)"
        )
    python = os.path.abspath(found)  # the workers may run elsewhere
    with tempfile.TemporaryDirectory(prefix="fastgd-baseline-") as folder:  # -I and a neutral folder: its own fastgd
        try:
            done = subprocess.run(
                [python, "-I", "-c", _BASELINE_PROBE],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=folder,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise ValueError(f"--baseline {python}: could not run it ({error})") from None
    if done.returncode != 0:
        raise ValueError(f"--baseline {python}: that Python cannot import fastgd:\n{done.stderr.strip()[-2000:]}")
    try:
        version, path = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ValueError(
            f"--baseline {python}: could not read its fastgd's version from {done.stdout[-500:]!r}"
        ) from None
    return dict(python=python, version=version, path=path, label=f"fastgd {version}")


def run(
    names=None,
    n_threads=None,
    repeats=3,
    peers=False,
    out=None,
    track_gradients=False,
    peer_pythons=None,
    baseline=None,
):
    """Print the benchmark table; returns its rows as dicts. ``track_gradients``: also fastgd
    with gradient health recorded (``fastgd-track``), to time what it costs; ``peer_pythons``:
    {label: (library, python)} peers run by other environments' Pythons (``parse_peer_pythons``),
    on the same workload, data and initial weights (written to a file they read); ``baseline``:
    another installed fastgd (``parse_baseline``, or the path of its Python), run the same way
    by its own Python and printed as a row of its own, ``fastgd VERSION``, after fastgd's."""
    import tempfile

    from ..diagnostics import cpu_name
    from .worker import runtime, write_standalone

    names = list(names or WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; expected some of {list(WORKLOADS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if isinstance(baseline, (str, os.PathLike)):
        baseline = parse_baseline(os.fspath(baseline))  # before anything is measured
    libraries = (
        ["fastgd", "fastgd-numpy"]
        + (["fastgd-track"] if track_gradients else [])
        + (["torch", "jax", "sklearn"] if peers else [])
    )
    missing = [lib for lib in libraries if not available(lib)]
    libraries = [lib for lib in libraries if lib not in missing]
    from .._threads import default_threads

    threads = n_threads or default_threads()
    roofline = _worker("roofline", "-", threads)["gflops"]
    print(
        f"{datetime.date.today()}  CPU: {cpu_name()} ({os.cpu_count()} logical cores), {threads} threads; "
        f"best float32 GEMM {roofline:.1f} GFLOP/s; best of {repeats} interleaved rounds, one process per run",
        file=out,
    )
    for lib in missing:
        print(f"({lib} skipped: {', '.join(REQUIRES[lib])} not installed)", file=out)
    external = dict(peer_pythons or {})
    for label, (library, python) in external.items():
        print(f"({label}: {library} run by {python})", file=out)
    order = [*libraries, *external]  # the rounds' order and the table's
    if baseline:
        print(
            f"(baseline: fastgd {baseline['version']} from {baseline['path']}, run by {baseline['python']})", file=out
        )
        external[baseline["label"]] = ("fastgd", baseline["python"])
        order.insert(1, baseline["label"])
    width = max(13, *(len(label) for label in order))
    header = (
        f"{'workload':<8} {'library':<{width}} {'µs/step':>11} {'fastgd is':>10} {'% roofline':>10} {'compile s':>9} "
        f"{'final loss':>11}  version, runtime"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    folder = tempfile.TemporaryDirectory(prefix="fastgd-bench-")
    for name in names:
        workload = WORKLOADS[name]
        if external:
            standalone = os.path.join(folder.name, f"{name}.npz")
            write_standalone(workload, standalone)
        best = {}
        for _ in range(repeats):
            for lib in order:
                if lib in external:
                    isolated = bool(baseline) and lib == baseline["label"]
                    result = _worker(
                        external[lib][0], standalone, n_threads, python=external[lib][1], isolated=isolated
                    )
                else:
                    result = _worker(lib, name, n_threads)
                if "unsupported" in result:  # every fastgd has the workloads' sigmoid networks
                    raise RuntimeError(f"{lib} on {name}: {result['unsupported']}")
                if lib not in best or result["seconds"] < best[lib]["seconds"]:
                    best[lib] = result
        fastgd_seconds = best["fastgd"]["seconds"]
        for lib in order:
            result = best[lib]
            speedup = result["seconds"] / fastgd_seconds
            roof = 100.0 * workload.flops_per_step() * workload.steps / result["seconds"] / 1e9 / roofline
            # label: the table's name for the run (jax@1 for another environment's jax), recorded
            # with the runtime and the Python that ran it so that a result file reads like the table.
            kind = runtime(external[lib][0] if lib in external else lib, result["version"])
            row = dict(
                result,
                label=lib,
                runtime=kind,
                python=external[lib][1] if lib in external else sys.executable,
                speedup=speedup,
                roofline_percent=roof,
                threads=threads,
                roofline_gflops=roofline,
                repeats=repeats,
            )
            if baseline and lib == baseline["label"]:
                row.update(baseline=True)
            rows.append(row)
            loss = "" if result.get("final_loss") is None else f"{result['final_loss']:.5g}"
            print(
                f"{name:<8} {lib:<{width}} {result['us_per_step']:>11.4g} {speedup:>9.2f}x {roof:>9.1f}% "
                f"{result['compile_seconds']:>9.2f} {loss:>11}  {result['version']}, {kind}",
                file=out,
            )
    folder.cleanup()
    if "digits" in names:
        accuracies = digits_accuracy()
        for row in rows:  # the recipe's accuracy belongs to fastgd's digits row
            if row["workload"] == "digits" and row["label"] == "fastgd":
                row.update(test_accuracy=sum(accuracies) / len(accuracies), test_accuracy_splits=accuracies)
        print(
            f"digits: test accuracy {sum(accuracies) / len(accuracies):.4f} (fastgd), mean of {len(accuracies)} "
            "train/test "
            f"splits ({', '.join(f'{a:.4f}' for a in accuracies)})",
            file=out,
        )
    return rows


# The activation sweep's targets: every activation's step at most this times relu's (the same
# workload, dtype and fastgd), and at least as fast as the baseline's (a release, e.g. 0.2.0).
TARGET_VS_RELU = 1.5
ACTIVATION_DTYPES = ("float32", "float64")


def hidden_activations() -> list:
    """The activations ``Network(activation=...)`` takes, in the order of fastgd's table
    (``fastgd.registry.ACTIVATIONS``): every entry but the output-only ones."""
    from ..registry import ACTIVATIONS

    return [name for name, spec in ACTIVATIONS.items() if not spec.output_only]


def activations(names=None, dtypes=ACTIVATION_DTYPES, n_threads=None, repeats=3, baseline=None, out=None):
    """The activation sweep: print its table and return its rows as dicts, one per workload,
    dtype and activation.

    Each workload (default ``small``) is trained with each of ``hidden_activations()`` as its
    ``activation=`` (hidden layers and, for mse, the output layer), in each of ``dtypes``, by this
    fastgd and, with ``baseline`` (``parse_baseline``, or the path of its Python), by another
    installed fastgd from the same initial weights and data (the workload written to a file, as
    ``run`` does). Every run is a process of its own, rounds interleaved, the best of ``repeats``
    kept. A row's figures: ``us_per_step`` (this fastgd), ``vs_relu`` (its step over its relu
    step, same workload and dtype), and with a baseline ``baseline_us_per_step`` and ``speedup``
    (the baseline's time over this fastgd's), both None (``n/a`` in the table) where the baseline's
    ``Network`` refuses the activation (its reason in ``baseline_unsupported``); ``target_met``:
    ``vs_relu`` at most ``TARGET_VS_RELU`` and, where the baseline ran, ``speedup`` at least 1.
    """
    import tempfile

    from .._threads import default_threads
    from ..diagnostics import cpu_name
    from .worker import write_standalone
    from .workloads import resolve

    names = list(names or ["small"])
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; expected some of {list(WORKLOADS)}")
    dtypes = list(dtypes)
    if not dtypes or any(dtype not in ACTIVATION_DTYPES for dtype in dtypes):
        raise ValueError(f"dtypes must be some of {list(ACTIVATION_DTYPES)}, got {dtypes}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if isinstance(baseline, (str, os.PathLike)):
        baseline = parse_baseline(os.fspath(baseline))  # before anything is measured
    swept = hidden_activations()
    threads = n_threads or default_threads()
    print(
        f"{datetime.date.today()}  CPU: {cpu_name()} ({os.cpu_count()} logical cores), {threads} threads; activation "
        "sweep: "
        f"{', '.join(swept)}; best of {repeats} interleaved rounds, one process per run",
        file=out,
    )
    for name in names:
        workload = WORKLOADS[name]
        layers = "-".join(map(str, workload.layer_sizes))
        print(
            f"({name}: {layers}, {workload.loss}, {workload.optimizer} lr {workload.lr}, batch {workload.batch}, "
            f"{workload.rows} rows, "
            f"{workload.epochs} epochs, {workload.steps} steps; the activation on the hidden layers"
            f"{'' if workload.loss == 'crossentropy' else ' and the output layer'})",
            file=out,
        )
    if baseline:
        print(
            f"(baseline: fastgd {baseline['version']} from {baseline['path']}, run by {baseline['python']})", file=out
        )
    cases = [(name, dtype, activation) for name in names for dtype in dtypes for activation in swept]
    folder = tempfile.TemporaryDirectory(prefix="fastgd-bench-")
    best, unsupported = {}, {}
    try:
        files = {}
        for name, dtype, activation in cases if baseline else ():
            files[name, dtype, activation] = os.path.join(folder.name, f"{name}-{dtype}-{activation}.npz")
            write_standalone(resolve(f"{name},activation={activation},dtype={dtype}"), files[name, dtype, activation])
        for _ in range(repeats):
            for case in cases:
                name, dtype, activation = case
                runs = [("this", "fastgd", f"{name},activation={activation},dtype={dtype}", None)]
                if baseline and case not in unsupported:
                    runs.append(("baseline", "fastgd", files[case], baseline["python"]))
                for who, library, workload, python in runs:
                    result = _worker(library, workload, n_threads, python=python, isolated=python is not None)
                    if "unsupported" in result:
                        if who == "this":
                            raise RuntimeError(f"fastgd on {name} {dtype} with {activation}: {result['unsupported']}")
                        unsupported[case] = result["unsupported"]
                    elif (who, case) not in best or result["seconds"] < best[who, case]["seconds"]:
                        best[who, case] = result
    finally:
        folder.cleanup()

    label = baseline["label"] if baseline else None
    width = max(10, len(label or "") + 3)
    header = f"{'workload':<8} {'activation':<11} {'dtype':<7} {'µs/step':>9}"
    if baseline:
        header += f" {label + ' µs':>{width}} {'baseline/this':>13}"
    header += f" {'vs relu':>8}  target: <= {TARGET_VS_RELU:g}x relu{f', >= 1x {label}' if baseline else ''}"
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for case in cases:
        name, dtype, activation = case
        mine = best["this", case]
        vs_relu = mine["seconds"] / best["this", (name, dtype, "relu")]["seconds"]
        row = dict(mine, label="fastgd", vs_relu=vs_relu, threads=threads, repeats=repeats, python=sys.executable)
        line = f"{name:<8} {activation:<11} {dtype:<7} {mine['us_per_step']:>9.4g}"
        missed = []
        if baseline:
            theirs = best.get(("baseline", case))
            speedup = None if theirs is None else theirs["seconds"] / mine["seconds"]
            row.update(
                baseline_label=label,
                baseline_python=baseline["python"],
                baseline_version=baseline["version"],
                baseline_us_per_step=None if theirs is None else theirs["us_per_step"],
                speedup=speedup,
                baseline_final_loss=None if theirs is None else theirs["final_loss"],
                baseline_unsupported=unsupported.get(case),
            )
            if theirs is None:
                line += f" {'n/a':>{width}} {'n/a':>13}"
            else:
                line += f" {theirs['us_per_step']:>{width}.4g} {speedup:>12.2f}x"
                if speedup < 1.0:
                    missed.append(f"slower than {label}")
        line += f" {vs_relu:>7.2f}x"
        if vs_relu > TARGET_VS_RELU:
            missed.insert(0, f"{vs_relu:.2f}x relu")
        row.update(target_met=not missed)
        rows.append(row)
        print(f"{line}  {'met' if not missed else 'missed: ' + ', '.join(missed)}", file=out)
    reasons = {}
    for (_, _, activation), reason in unsupported.items():
        reasons.setdefault(activation, reason.splitlines()[0][:160])
    for activation, reason in reasons.items():
        print(f"n/a: {label}'s Network refuses activation {activation!r} ({reason})", file=out)
    return rows


def _mpi_worker(workload, ranks, threads):
    import shutil

    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        raise RuntimeError("bench --ranks needs mpiexec: pip install 'fastgd[mpi]'")
    command = [
        mpiexec,
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "mpi4py",
        "-m",
        "fastgd.bench.worker",
        "fastgd-mpi",
        workload,
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"{ranks} ranks on {workload} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ranks(names=None, n_ranks=2, repeats=3, out=None):
    """Data-parallel scaling: each workload (default mid and large) on 1 rank x 1 thread,
    1 rank x ``n_ranks`` threads and ``n_ranks`` ranks x 1 thread (``mpiexec``), rounds
    interleaved, best of ``repeats``. Prints µs/step, the speed-up over one rank on one thread,
    and the measured cost of one gradient exchange; returns the rows."""
    from ..diagnostics import cpu_name

    names = list(names or ("mid", "large"))
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; expected some of {list(WORKLOADS)}")
    if n_ranks < 2:
        raise ValueError(f"ranks must be >= 2, got {n_ranks}")
    print(
        f"{datetime.date.today()}  CPU: {cpu_name()} ({os.cpu_count()} logical cores); best of {repeats} interleaved "
        "rounds, "
        f"one job per run",
        file=out,
    )
    header = (
        f"{'workload':<8} {'configuration':<18} {'µs/step':>10} {'vs 1x1':>7} {'exchange µs':>12} {'gradient MB':>12}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    # (a table, one entry a line: the formatter would break its entries apart)
    # fmt: off
    configurations = (("1 rank x 1 thread", lambda w: _worker("fastgd", w, 1)),
                      (f"1 rank x {n_ranks} threads", lambda w: _worker("fastgd", w, n_ranks)),
                      (f"{n_ranks} ranks x 1 thread", lambda w: _mpi_worker(w, n_ranks, 1)))
    # fmt: on
    rows = []
    for name in names:
        best = {}
        for _ in range(repeats):
            for label, measure in configurations:
                result = measure(name)
                if label not in best or result["seconds"] < best[label]["seconds"]:
                    best[label] = result
        base = best[configurations[0][0]]["seconds"]
        for label, _ in configurations:
            result = best[label]
            exchange = f"{result['exchange_seconds'] * 1e6:>12.0f}" if "exchange_seconds" in result else f"{'':>12}"
            size = f"{result['gradient_bytes'] / 1e6:>12.2f}" if "gradient_bytes" in result else f"{'':>12}"
            print(
                f"{name:<8} {label:<18} {result['us_per_step']:>10.1f} {base / result['seconds']:>6.2f}x {exchange} "
                f"{size}",
                file=out,
            )
            rows.append(dict(result, configuration=label, speedup=base / result["seconds"]))
    return rows


_OUT_OF_CORE_CHILD = """
import os, resource, sys, time
import numpy as np
import fastgd
from fastgd.bench.workloads import WORKLOADS
from fastgd.streaming import Streaming
folder, mode, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
w = WORKLOADS["mid"]
n_in, n_out = w.layer_sizes[0], w.layer_sizes[-1]
X = np.memmap(os.path.join(folder, "X.f32"), dtype=np.float32, mode="r", shape=(rows, n_in))
Y = np.memmap(os.path.join(folder, "Y.f32"), dtype=np.float32, mode="r", shape=(rows, n_out))
if mode == "memory":
    X, Y = np.array(X), np.array(Y)
net = w.network()
shuffle = "blocks" if mode == "blocks" else True
net.copy().fit(X[:4096], Y[:4096], optimizer=w.make_optimizer(), batch_size=w.batch_size, shuffle=shuffle,
               streaming=None if mode == "memory" else Streaming())  # compile first
if mode == "cold":  # evict the files from the page cache: every row is read from the disk
    for name in ("X.f32", "Y.f32"):
        handle = os.open(os.path.join(folder, name), os.O_RDONLY)
        os.posix_fadvise(handle, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(handle)
try:  # the peak resident memory from here on (Linux), not the compiler's before
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    def peak_mb():
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) for line in lines if line.startswith("VmHWM:")) / 1024
except OSError:
    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
net.fit(X, Y, optimizer=w.make_optimizer(), epochs=1, batch_size=w.batch_size, shuffle=shuffle)
seconds = time.perf_counter() - start
print(seconds, peak_mb(), net.history.loss[-1])
"""


def out_of_core(budget_mb=512, factor=4, repeats=1, out=None):
    """Training on a memory map ``factor`` times larger than a memory budget: one epoch of the
    ``mid`` network over a float32 file of ``factor * budget_mb`` MB, streamed (rows shuffled,
    in the page cache; the same with the page cache emptied first; block shuffle), against the
    same data loaded in memory. Prints each run's seconds, samples/s and the process's peak
    resident memory during the fit (Python, NumPy and the compiled code included; the
    compiler's peak before it excluded where Linux lets the peak be reset)."""
    import tempfile

    from .workloads import WORKLOADS

    workload = WORKLOADS["mid"]
    n_in, n_out = workload.layer_sizes[0], workload.layer_sizes[-1]
    rows = int(factor * budget_mb * (1 << 20)) // ((n_in + n_out) * 4) // workload.batch * workload.batch
    with tempfile.TemporaryDirectory(prefix="fastgd-ooc-", dir=os.environ.get("FASTGD_BENCH_DIR")) as folder:
        rng = np.random.default_rng(0)
        for name, cols in (("X.f32", n_in), ("Y.f32", n_out)):
            data = np.memmap(os.path.join(folder, name), dtype=np.float32, mode="w+", shape=(rows, cols))
            for start in range(0, rows, 65536):
                block = rng.standard_normal((min(65536, rows - start), cols), dtype=np.float32)
                data[start : start + block.shape[0]] = block if name == "X.f32" else 1 / (1 + np.exp(-block))
            data.flush()
            del data
        size_mb = rows * (n_in + n_out) * 4 / (1 << 20)
        print(
            f"{datetime.date.today()}  mid network, one epoch of {rows} rows ({size_mb:.0f} MB of float32 on disk), "
            f"memory budget {budget_mb} MB; peak RSS: the whole process's, during the fit",
            file=out,
        )
        header = f"{'data':<34} {'seconds':>8} {'samples/s':>10} {'peak RSS MB':>12} {'within budget':>14}"
        print(header, file=out)
        print("-" * len(header), file=out)
        labels = {
            "stream": "memory map, streamed, shuffled",
            "cold": "  same, page cache emptied first",
            "blocks": "memory map, streamed, block shuffle",
            "memory": "same data in memory (np.array)",
        }
        best = {}
        for _ in range(repeats):
            for mode in labels:
                done = subprocess.run(
                    [sys.executable, "-c", _OUT_OF_CORE_CHILD, folder, mode, str(rows)],
                    capture_output=True,
                    text=True,
                    timeout=WORKER_TIMEOUT,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"out-of-core run {mode} failed:\n{done.stderr[-3000:]}")
                seconds, rss, loss = (float(v) for v in done.stdout.split()[-3:])
                if mode not in best or seconds < best[mode][0]:
                    best[mode] = (seconds, max(rss, best.get(mode, (0, 0))[1]), loss)
        for mode, label in labels.items():
            seconds, rss, _ = best[mode]
            print(
                f"{label:<34} {seconds:>8.2f} {rows / seconds:>10.0f} {rss:>12.0f} "
                f"{'yes' if rss <= budget_mb else 'no':>14}",
                file=out,
            )
        return {mode: dict(seconds=v[0], peak_rss_mb=v[1], final_loss=v[2], rows=rows) for mode, v in best.items()}


from .startup import cold_start  # noqa: E402,F401 (python -m fastgd bench --cold)

DIGITS_SPLITS = 5


def digits_accuracy(backend="numba", splits=DIGITS_SPLITS):
    """Test accuracy of the ``digits`` workload's recipe, one value per train/test split.

    Split ``s`` holds out 25 % of each class, drawn with ``random_state=s`` (``load_digits``); the
    network is the workload's (64-64-10 sigmoid/softmax, ``random_state=0``), trained with Adam
    (lr 1e-3), batch 32, for 200 epochs, shuffled. One split of 450 test images moves the
    accuracy in steps of 0.0022, and splits differ by more than that, so the recipe's accuracy is
    quoted as the mean over splits.
    """
    import numpy as np

    from ..datasets import load_digits
    from ..network import Network
    from ..optimizers import Adam

    accuracies = []
    for split in range(splits):
        X_train, X_test, y_train, y_test = load_digits(random_state=split)
        net = Network(
            [64, 64, 10], activation="sigmoid", loss="crossentropy", dtype="float32", random_state=0, backend=backend
        )
        net.fit(X_train, y_train, optimizer=Adam(lr=1e-3), epochs=200, batch_size=32)
        accuracies.append(float(np.mean(net.predict(X_test).argmax(axis=1) == y_test)))
    return accuracies
