"""Stress test: no Ctrl-C is lost. SIGINT at random moments of many fits, in child processes.

Not part of the default ``pytest`` run (the file name has no ``test_`` prefix);
``tests/test_interrupt_stress.py`` runs a bounded version of it, marked ``stress`` and so
deselected from the default run too (``pytest -m stress tests/test_interrupt_stress.py`` runs it;
``.ci/run`` does, in a step of its own). The full run::

    python tests/stress_interrupt.py                        # 200 interrupts, one CPU hog
    python tests/stress_interrupt.py -n 1000 --hogs 2 --cold 0.2 --jobs 2

Each child process imports fastgd and then runs *episodes*: in each it trains, with one kind of
fit in a loop (below), until a ``KeyboardInterrupt`` arrives; it checks that the network it was
training is consistent (``epochs_trained``, the history and the optimizer's step count agree)
and reports where the interrupt was raised. The parent sends SIGINT at a random moment after the
child announces an episode. The first episode of a child includes loading Numba's cache (or
compiling, for a child given an empty ``NUMBA_CACHE_DIR``: ``--cold``); later ones land in
training, in Python visits and callbacks, in checkpoint writes, between fits and in the
bookkeeping around them. A child runs its fits on one or two threads (``FASTGD_NUM_THREADS``);
``--hogs`` processes keep the cores busy meanwhile. Before any of that, one process runs a short
fit of every configuration on each thread count, with no deadline but a generous timeout, so
that Numba's default cache is warm for the children that are not cold (in a fresh clone it is
empty: those children would compile, and their interrupts wait for LLVM past ``--grace``);
``--no-warm`` skips that step.

An interrupt is *lost* when the child has not reported its ``KeyboardInterrupt`` ``--grace``
seconds after the signal (a child whose first episode compiles gets longer: a compile in LLVM
runs no Python, so the interrupt waits for it). The parent then dumps the child's Python stacks
(``faulthandler`` on SIGUSR1) and kills it. The run also fails on a child that dies, leaves an
inconsistent network, hangs at exit, or leaves a compile helper process running behind it.
Exit status: 0 when nothing was lost or failed, 1 otherwise. POSIX only.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.abspath(__file__)

# The kinds of fit a child loops over, and what each exercises.
KINDS = {
    # A long fit of a large network without callbacks: the compiled call runs in a helper
    # thread while the main thread waits for it.
    "plain": "long fit, no callbacks (call in a helper thread)",
    # Short fits of the same large network one after another: the interrupt often lands
    # between calls, between fits, in fit's set-up and ending.
    "short": "fits of 1-3 epochs in a loop (set-up, ending, between fits)",
    # Tiny fits in a loop: almost all the time is Python around short compiled calls that run
    # in the main thread without heartbeats.
    "tiny": "tiny fits in a loop (Python around short inline calls)",
    # A checkpoint every epoch and at the end: the loop visits Python, writes files.
    "checkpoint": "checkpoint every epoch and at the end of each fit",
    # A user callback every epoch doing Python work: visits, callbacks.
    "callback": "a Python callback every epoch",
    # Validation, early stopping and a sparse checkpoint: the monitor stage; the final save
    # happens in on_fit_end.
    "validation": "validation, early stopping, a checkpoint at the end",
    # The progress bar: timed visits, tqdm.
    "progress": "verbose=1 (progress bar, timed visits)",
    # Streamed data: a compiled call per chunk, validation in Python between calls.
    "streamed": "streamed data (a call per chunk), validation between calls",
}


# --------------------------------------------------------------------------------- the child


def _frame_where(frames) -> str:
    # The innermost of ``frames`` (outermost first) in fastgd, Numba or a library module
    # worth naming, as ``package/module:function``.
    for frame in reversed(frames):
        path = frame.f_code.co_filename.replace("\\", "/")
        for marker in (
            "/fastgd/",
            "/kernels/",
            "/numba/",
            "/llvmlite/",
            "/subprocess.py",
            "/threading.py",
            "/zipfile.py",
            "/tqdm/",
            "/numpy/",
        ):
            if marker in path:
                module = path.rsplit("/", 1)[-1].removesuffix(".py")
                return f"{marker.strip('/').removesuffix('.py')}/{module}:{frame.f_code.co_name}"
    return f"child:{frames[-1].f_code.co_name}" if frames else "child:?"


def _where(error) -> str:
    """Where a KeyboardInterrupt was raised (following a KeyboardInterrupt that fit caught and
    raised again), and where fit's SIGINT handler ran when it only requested a stop."""
    while isinstance(error.__context__, KeyboardInterrupt):
        error = error.__context__
    tb, frames = error.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    where = _frame_where(frames)
    if HANDLED:
        where += f" (handler ran in {HANDLED[-1]})"
    return where


# Where fit's SIGINT handler ran (``_instrument``): the phase a deferred interrupt hit.
HANDLED = []


def _instrument():
    # Wrap fit's SIGINT handler so that it notes where it ran (diagnostics only).
    from fastgd.training import interrupt

    original = getattr(interrupt.StopRequest, "_handler", None)
    if original is None:
        return

    def _handler(self, signum, frame):
        frames, current = [], frame
        while current is not None:
            frames.append(current)
            current = current.f_back
        HANDLED.append(_frame_where(frames[::-1]))
        os.write(2, f"[stress] fit's SIGINT handler ran in {HANDLED[-1]}\n".encode())  # (no buffered I/O in a handler)
        return original(self, signum, frame)

    interrupt.StopRequest._handler = _handler


class _Box:
    """The network an episode trains, and how many batches an epoch of it takes."""

    net = None
    batches = 0


def _data(rows, n_in, n_out, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, n_in)).astype(np.float32)
    Y = rng.uniform(size=(rows, n_out)).astype(np.float32)
    return X, Y


def _train(kind, box, rng, folder, once=False):
    """Train fits of ``kind`` forever (until a KeyboardInterrupt). ``once``: one fit of one epoch
    of each configuration the kind uses, and return (``--warm``: compiles what they need into
    Numba's cache, or loads it from there)."""
    import itertools

    import fastgd

    rounds = range(1) if once else itertools.count()

    def epochs(count):
        return 1 if once else count

    def network(sizes):
        box.net = None
        net = fastgd.Network(sizes, dtype="float32", random_state=rng.randrange(1000))
        box.net = net
        return net

    big, rows, batch = [64, 256, 256, 8], 2048, 64
    checkpoint = os.path.join(folder, "checkpoint.npz")
    if kind in ("plain", "callback", "progress"):
        X, Y = _data(rows, big[0], big[-1])
        box.batches = -(-rows // batch)
        net = network(big)
        options = {}
        if kind == "callback":

            def callback(epoch, history, network):
                return sum(range(2000)) < 0  # some Python, never a stop

            options = dict(callbacks=callback)
        elif kind == "progress":
            options = dict(verbose=1)
        for _ in rounds:
            net.fit(
                X,
                Y,
                optimizer=fastgd.Adam(lr=1e-3) if net.optimizer is None else None,
                epochs=epochs(10**6 if kind != "progress" else 40),
                batch_size=batch,
                **options,
            )
        return
    if kind == "short":
        X, Y = _data(rows, big[0], big[-1])
        box.batches = -(-rows // batch)
        net = network(big)
        for _ in rounds:
            net.fit(
                X,
                Y,
                optimizer="adam" if net.optimizer is None else None,
                epochs=epochs(rng.randint(1, 3)),
                batch_size=batch,
            )
        return
    if kind == "tiny":
        X, Y = _data(256, 8, 1)
        box.batches = 256 // 16
        for _ in rounds:
            net = network([8, 16, 1])
            for _ in range(rng.randint(1, 4)):
                net.fit(X, Y, epochs=epochs(rng.randint(1, 20)), batch_size=16)
        return
    if kind == "checkpoint":
        X, Y = _data(1024, 16, 4)
        box.batches = 1024 // 32
        net = network([16, 64, 4])
        for _ in rounds:
            net.fit(
                X,
                Y,
                optimizer="adam" if net.optimizer is None else None,
                epochs=epochs(rng.randint(1, 30)),
                batch_size=32,
                checkpoint=checkpoint,
                checkpoint_every=1 if once else rng.choice([1, 1, 7, 10**6]),
            )
        return
    if kind == "validation":
        from fastgd.callbacks import EarlyStopping

        X, Y = _data(1024, 16, 4)
        box.batches = 768 // 32
        net = network([16, 64, 4])
        for _ in rounds:
            net.fit(
                X[:768],
                Y[:768],
                optimizer="adam" if net.optimizer is None else None,
                epochs=epochs(rng.randint(5, 60)),
                batch_size=32,
                validation_data=(X[768:], Y[768:]),
                early_stopping=EarlyStopping(patience=10**6, restore_best=True),
                checkpoint=checkpoint,
                checkpoint_every=10**6,
            )
        return
    if kind == "streamed":
        import numpy as np

        from fastgd.streaming import Streaming

        X, Y = _data(2048, 16, 4)
        path_x, path_y = os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy")
        np.save(path_x, X)
        np.save(path_y, Y)
        X, Y = np.load(path_x, mmap_mode="r"), np.load(path_y, mmap_mode="r")
        box.batches = 2048 // 32
        net = network([16, 64, 4])
        for _ in rounds:
            net.fit(
                X,
                Y,
                optimizer="adam" if net.optimizer is None else None,
                epochs=epochs(rng.randint(1, 5)),
                batch_size=32,
                streaming=Streaming(chunk_mb=0.05),
                validation_data=(X[:256], Y[:256]),
            )
        return
    raise ValueError(f"unknown kind {kind!r}")


def _consistent(box) -> str:
    """'' when the interrupted network is consistent, else what is wrong."""
    import numpy as np

    net = box.net
    if net is None:
        return ""
    k = int(net.epochs_trained)
    if len(net.history.loss) != k:
        return f"epochs_trained {k} but {len(net.history.loss)} losses in the history"
    if net.optimizer is not None and box.batches and net.optimizer_steps != k * box.batches:
        return f"epochs_trained {k} but {net.optimizer_steps} optimizer steps ({box.batches} per epoch)"
    if not np.isfinite(net.flat_parameters).all():
        return "non-finite parameters"
    return ""


def child(arguments) -> int:
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent's stack dump of a lost child
    spec = json.loads(arguments)
    rng = random.Random(spec["seed"])
    import numpy  # noqa: F401  (imported before the first episode: not what is measured)

    import fastgd  # noqa: F401

    _instrument()
    folder = tempfile.mkdtemp(prefix="fastgd-stress-")
    try:
        for episode, kind in enumerate(spec["kinds"]):
            box = _Box()
            HANDLED.clear()
            try:
                print(f"ARMED {episode} {kind}", flush=True)
                _train(kind, box, rng, folder)
            except KeyboardInterrupt as error:
                where = _where(error)
                problem = _consistent(box)
                if problem:
                    print(f"INCONSISTENT {episode} {where} {problem}", flush=True)
                    return 1
                print(f"INTERRUPTED {episode} {where}", flush=True)
        print("DONE", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def warm_child(arguments) -> int:
    """``--warm KINDS``: one short fit of each configuration of each kind, so that Numba's cache
    holds everything the warm children's fits use (printing ``WARM kind seconds`` for each)."""
    kinds = json.loads(arguments)
    import fastgd  # noqa: F401

    rng = random.Random(0)
    folder = tempfile.mkdtemp(prefix="fastgd-stress-warm-")
    try:
        for kind in kinds:
            start = time.perf_counter()
            _train(kind, _Box(), rng, folder, once=True)
            print(f"WARM {kind} {time.perf_counter() - start:.1f}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


# -------------------------------------------------------------------------------- the parent


class Summary:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.received = 0
        self.lost = []  # descriptions
        self.failed = []
        self.where = collections.Counter()
        self.by_kind = collections.Counter()
        self.latencies = []

    def ok(self) -> bool:
        return not self.lost and not self.failed

    def report(self, out=sys.stdout):
        latencies = sorted(self.latencies)

        def pct(p):
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

        print(
            f"interrupts sent: {self.sent}, received as KeyboardInterrupt: {self.received}, lost: {len(self.lost)}, "
            f"other failures: {len(self.failed)}",
            file=out,
        )
        print(
            f"latency signal -> KeyboardInterrupt reported: median {pct(0.5):.3f} s, p99 {pct(0.99):.3f} s, "
            f"max {latencies[-1] if latencies else float('nan'):.3f} s",
            file=out,
        )
        print("by kind (threads, cache):", file=out)
        for key, count in sorted(self.by_kind.items()):
            print(f"  {key:<40} {count}", file=out)
        print("where the KeyboardInterrupt was raised:", file=out)
        for key, count in self.where.most_common():
            print(f"  {key:<56} {count}", file=out)
        for title, items in (("LOST", self.lost), ("FAILED", self.failed)):
            for item in items:
                print(f"{title}: {item}", file=out)


def _reader(stream, lines):
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _helpers_of(marker):
    """Processes whose environment holds ``marker`` (a child's private folder): compile helpers
    a child left running. Linux only (empty elsewhere)."""
    found = []
    if not os.path.isdir("/proc"):
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as file:
                if marker.encode() in file.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def drive(spec, summary, options, log):
    """Run one child through its episodes, sending SIGINT in each; record the outcome."""
    environment = dict(os.environ)
    environment["FASTGD_NUM_THREADS"] = str(spec["threads"])
    environment["PYTHONFAULTHANDLER"] = "1"
    private = tempfile.mkdtemp(prefix="fastgd-stress-parent-")
    environment["FASTGD_STRESS_MARKER"] = private  # finds the child's helper processes
    if spec["cold"]:
        environment["NUMBA_CACHE_DIR"] = os.path.join(private, "numba-cache")
    rng = random.Random(spec["seed"] + 1)
    label = f"child seed={spec['seed']} threads={spec['threads']} {'cold' if spec['cold'] else 'warm'} cache"
    errors = open(os.path.join(private, "stderr"), "w+")
    process = subprocess.Popen(
        [sys.executable, HERE, "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env=environment,
        stdin=subprocess.DEVNULL,
    )
    lines = queue.Queue()
    threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()

    def next_line(timeout):
        # The child's next line; "" when none came in time, None when its output ended.
        try:
            return lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return ""

    def stderr_tail():
        errors.flush()
        errors.seek(0)
        return errors.read()[-12000:]

    def fail(target, message):
        if process.poll() is None:
            process.send_signal(signal.SIGUSR1)  # faulthandler: every thread's Python stack
            time.sleep(1.0)
            process.kill()
        process.wait()
        with summary.lock:
            target.append(f"{label}: {message}\n--- child stderr (tail) ---\n{stderr_tail()}")

    try:
        for episode, kind in enumerate(spec["kinds"]):
            line = next_line(options.start_timeout)
            if line is None or not line.startswith(f"ARMED {episode} "):
                fail(summary.failed, f"episode {episode} ({kind}): expected ARMED, got {line!r}")
                return
            first = episode == 0
            if first and spec["cold"]:
                delay = rng.uniform(0.0, options.cold_window)
            elif first:
                delay = rng.uniform(0.0, 3.0)  # the cache load, the first calls, training
            else:
                delay = rng.choice([rng.uniform(0.0, 0.3), rng.uniform(0.0, 2.5)])
            time.sleep(delay)
            if process.poll() is not None:
                fail(
                    summary.failed,
                    f"episode {episode} ({kind}): the child ended before the signal (exit {process.returncode})",
                )
                return
            process.send_signal(signal.SIGINT)
            sent = time.perf_counter()
            with summary.lock:
                summary.sent += 1
                summary.by_kind[f"{kind} ({spec['threads']} thr, {'cold' if spec['cold'] else 'warm'})"] += 1
            grace = options.grace + (options.cold_grace if first and spec["cold"] else 0.0)
            line = next_line(grace)
            latency = time.perf_counter() - sent
            if line is None:
                fail(
                    summary.failed, f"episode {episode} ({kind}): SIGINT sent {delay:.3f} s after ARMED; the child died"
                )
                return
            if line.startswith(f"INTERRUPTED {episode} "):
                where = line.split(" ", 2)[2]
                with summary.lock:
                    summary.received += 1
                    summary.where[where] += 1
                    summary.latencies.append(latency)
                print(
                    f"  {label} episode {episode} {kind:<10} delay {delay:6.3f} s -> KeyboardInterrupt after "
                    f"{latency:.3f} s in {where}",
                    file=log,
                    flush=True,
                )
                continue
            if line == "":
                fail(
                    summary.lost,
                    f"episode {episode} ({kind}): SIGINT sent {delay:.3f} s after ARMED; no KeyboardInterrupt "
                    f"{grace:.0f} s later",
                )
            else:
                fail(summary.failed, f"episode {episode} ({kind}): SIGINT sent {delay:.3f} s after ARMED; got {line!r}")
            return
        line = next_line(options.grace)
        if line != "DONE":
            fail(summary.failed, f"expected DONE, got {line!r}")
            return
        try:
            process.wait(timeout=options.grace)
        except subprocess.TimeoutExpired:
            fail(summary.failed, "hung at exit")
            return
        if process.returncode != 0:
            fail(summary.failed, f"exit status {process.returncode}")
            return
        time.sleep(0.5)
        left = _helpers_of(private)
        if left:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            with summary.lock:
                summary.failed.append(f"{label}: left {len(left)} process(es) running behind it (a compile helper?)")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        errors.close()
        shutil.rmtree(private, ignore_errors=True)


def warm_cache(kinds, threads, timeout, log) -> str:
    """Fill Numba's default cache with what the fits of ``kinds`` use, on each of ``threads``
    thread counts, before any warm child starts (and before the hogs). A *warm* child loads the
    cache in its first episode; without this, in a fresh clone (or after a kernel change) it
    would compile instead, for longer than ``grace`` on a busy machine: its first interrupt
    would wait for LLVM and count as lost, and the child's other episodes would never run.
    This step has no deadline but ``timeout``. Returns '' or what went wrong."""
    for count in threads:
        environment = dict(os.environ, FASTGD_NUM_THREADS=str(count))
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, HERE, "--warm", json.dumps(list(kinds))],
                capture_output=True,
                text=True,
                env=environment,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return f"warming Numba's cache ({count} thread(s)) took over {timeout:.0f} s"
        if done.returncode != 0:
            status = done.returncode
            return f"warming Numba's cache ({count} thread(s)) failed, exit status {status}:\n{done.stderr[-6000:]}"
        timings = ", ".join(
            " ".join(line.split()[1:]) + " s" for line in done.stdout.splitlines() if line.startswith("WARM ")
        )
        print(
            f"  Numba's cache warmed for {count} thread(s) in {time.perf_counter() - start:.1f} s ({timings})",
            file=log,
            flush=True,
        )
    return ""


def plan(interrupts, episodes, cold, kinds, seed):
    """The children: (spec, ...) with ``interrupts`` episodes in all."""
    rng = random.Random(seed)
    specs, left, index = [], interrupts, 0
    while left > 0:
        is_cold = rng.random() < cold
        count = 1 if is_cold else min(episodes, left)
        chosen = [rng.choice(kinds) for _ in range(count)]
        specs.append(dict(seed=seed * 1000 + index, threads=1 + index % 2, cold=is_cold, kinds=chosen))
        left -= count
        index += 1
    return specs


def run(
    interrupts=200,
    episodes=8,
    jobs=1,
    hogs=1,
    cold=0.1,
    grace=20.0,
    cold_grace=60.0,
    cold_window=20.0,
    seed=None,
    kinds=None,
    start_timeout=300.0,
    log=sys.stdout,
    warm=True,
    warm_timeout=1800.0,
) -> Summary:
    """Run the stress test; returns its ``Summary``. ``warm``: fill Numba's cache first
    (``warm_cache``), so that the children without ``cold`` find it warm."""
    options = argparse.Namespace(
        grace=grace, cold_grace=cold_grace, cold_window=cold_window, start_timeout=start_timeout
    )
    seed = random.randrange(1 << 20) if seed is None else seed
    kinds = list(kinds or KINDS)
    specs = plan(interrupts, episodes, cold, kinds, seed)
    print(
        f"stress_interrupt: {interrupts} interrupts over {len(specs)} child processes, {jobs} at a time, {hogs} CPU "
        "hog(s), "
        f"seed {seed}",
        file=log,
        flush=True,
    )
    summary = Summary()
    warm_specs = [spec for spec in specs if not spec["cold"]]
    if warm and warm_specs:
        used = sorted({kind for spec in warm_specs for kind in spec["kinds"]}, key=kinds.index)
        problem = warm_cache(used, sorted({spec["threads"] for spec in warm_specs}), warm_timeout, log)
        if problem:
            summary.failed.append(problem)
            return summary
    hog_processes = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL) for _ in range(hogs)
    ]
    try:
        pending = queue.Queue()
        for spec in specs:
            pending.put(spec)

        def worker():
            while True:
                try:
                    spec = pending.get_nowait()
                except queue.Empty:
                    return
                drive(spec, summary, options, log)

        workers = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    finally:
        for hog in hog_processes:
            hog.kill()
            hog.wait()
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--warm", help=argparse.SUPPRESS)
    parser.add_argument("-n", "--interrupts", type=int, default=200, help="SIGINTs to send in all (default 200)")
    parser.add_argument("--episodes", type=int, default=8, help="interrupts per child process (default 8)")
    parser.add_argument("--jobs", type=int, default=1, help="child processes at a time (default 1)")
    parser.add_argument("--hogs", type=int, default=1, help="CPU-hog processes running meanwhile (default 1)")
    parser.add_argument(
        "--cold", type=float, default=0.1, help="share of children with an empty Numba cache (default 0.1)"
    )
    parser.add_argument(
        "--cold-window", type=float, default=20.0, help="a cold child's signal comes within this many seconds"
    )
    parser.add_argument(
        "--grace", type=float, default=20.0, help="seconds after the signal before an interrupt counts as lost"
    )
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"fit kinds, comma-separated (default all: {','.join(KINDS)})"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--no-warm",
        action="store_true",
        help="do not fill Numba's cache first (warm children then compile whatever the cache lacks)",
    )
    parser.add_argument("--verbose", action="store_true", help="a line per interrupt")
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(args.child)
    if args.warm is not None:
        return warm_child(args.warm)
    if os.name != "posix":
        print("stress_interrupt: POSIX only (sends SIGINT to child processes); skipped")
        return 0
    kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown kinds {unknown}; known: {sorted(KINDS)}")
    log = sys.stdout if args.verbose else open(os.devnull, "w")
    start = time.perf_counter()
    summary = run(
        args.interrupts,
        args.episodes,
        args.jobs,
        args.hogs,
        args.cold,
        args.grace,
        cold_window=args.cold_window,
        seed=args.seed,
        kinds=kinds,
        log=log,
        warm=not args.no_warm,
    )
    summary.report()
    print(f"{time.perf_counter() - start:.0f} s")
    return 0 if summary.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
