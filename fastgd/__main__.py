"""Command line: ``python -m fastgd demo | bench | compile | config``."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _timed_fit(net, X, y, optimizer, epochs, chunks, batch_size=None, report=None):
    """Fit in ``chunks`` calls (to print progress); returns the seconds spent in fit."""
    seconds = 0.0
    per_chunk = epochs // chunks
    for chunk in range(chunks):
        start = time.perf_counter()
        history = net.fit(X, y, optimizer=optimizer, epochs=per_chunk, batch_size=batch_size)
        seconds += time.perf_counter() - start
        if report:
            report((chunk + 1) * per_chunk, history.loss[-1])
    return seconds


def _warm_up(net, X, y, optimizer, batch_size=None, **options):
    """First call of a configuration: compiles its kernels, or loads them from the on-disk cache.
    Timed apart, so that the demo never reports compilation as training time."""
    start = time.perf_counter()
    net.copy().fit(X[:4], y[:4], optimizer=optimizer, epochs=1, batch_size=batch_size, **options)
    net.copy().predict(X[:2])
    return time.perf_counter() - start


def demo(out=sys.stdout) -> int:
    import fastgd
    from fastgd._threads import team_size
    from fastgd.datasets import load_digits, xor

    def say(text=""):
        print(text, file=out, flush=True)

    say(f"fastgd {fastgd.__version__} demo: numba backend, up to {team_size(None)} threads\n")

    X, y = xor()
    say("XOR: 2-4-1 sigmoid network, loss sse, SGD lr=0.1, full batch, 10 000 epochs")
    say("     (weights drawn like the classic code: np.random.seed(42), uniform in [-1, 1))")
    fast = fastgd.Network([2, 4, 1], loss="sse", init="uniform", random_state=np.random.RandomState(42))
    slow = fast.copy(backend="numpy")
    compile_seconds = _warm_up(fast, X, y, fastgd.SGD(lr=0.1))
    optimizer = fastgd.SGD(lr=0.1)
    fast_seconds = _timed_fit(
        fast,
        X,
        y,
        optimizer,
        10_000,
        10,
        report=lambda e, loss: say(f"  epoch {e:6d}   loss mean(½(y−a)²) = {loss / 4:.6f}"),
    )
    # The NumPy backend takes the same steps; 1 000 epochs of them are enough to time it.
    slow_seconds = _timed_fit(slow, X, y, fastgd.SGD(lr=0.1), 1_000, 1) * 10
    prediction = fast.predict(X).ravel()
    solved = int((np.round(prediction) == y.ravel()).sum())
    say(f"  outputs {np.array2string(prediction, precision=3)}  ->  {solved}/4 correct")
    say(
        f"  time for 10 000 epochs: numba {fast_seconds:.3f} s, numpy backend {slow_seconds:.3f} s (timed on 1 000)"
        f"  ->  {slow_seconds / fast_seconds:.0f}x faster"
    )
    say(f"        (first call, compiling or loading the compile cache: {compile_seconds:.2f} s)\n")

    X_train, X_test, y_train, y_test = load_digits()
    options = dict(epochs=200, batch_size=32, validation_split=0.1, early_stopping=True, patience=15)
    # float64 and sigmoid hidden units, like XOR above: the first run in a fresh environment
    # compiles the training loop and the hidden layers' backward pass once for both.
    say("Digits: 64-64-10 sigmoid/softmax network, float64, crossentropy, Adam lr=1e-3, batch 32, up to 200 epochs,")
    say(f"        10% of the {len(y_train)} training images held out for early stopping (patience 15);")
    say(f"        {len(y_test)} more images held out for the test accuracy")
    fast = fastgd.Network([64, 64, 10], activation="sigmoid", loss="crossentropy", dtype="float64", random_state=0)
    slow = fast.copy(backend="numpy")
    compile_seconds = _warm_up(fast, X_train, y_train, fastgd.Adam(lr=1e-3), batch_size=32, validation_split=0.5)
    start = time.perf_counter()
    history = fast.fit(X_train, y_train, optimizer=fastgd.Adam(lr=1e-3), verbose=1, **options)
    fast_seconds = time.perf_counter() - start
    # The NumPy backend, same steps, timed on the first 20 epochs and scaled to the epochs run.
    start = time.perf_counter()
    slow.fit(X_train, y_train, optimizer=fastgd.Adam(lr=1e-3), **dict(options, epochs=20))
    slow_seconds = (time.perf_counter() - start) * len(history.loss) / 20
    accuracy = np.mean(fast.predict(X_test).argmax(axis=1) == y_test)
    stopped = f"stopped after epoch {history.stopped_epoch}" if history.stopped_epoch else "ran all epochs"
    say(
        f"  {stopped}; best validation loss {min(history.val_loss):.4f} at epoch {history.best_epoch} (weights "
        "restored)"
    )
    say(f"  test accuracy {accuracy:.3f}")
    say(
        f"  time for {len(history.loss)} epochs: numba {fast_seconds:.3f} s, numpy backend {slow_seconds:.3f} s "
        "(timed on 20)"
        f"  ->  {slow_seconds / fast_seconds:.1f}x faster"
    )
    say(f"        (first call, compiling or loading the compile cache: {compile_seconds:.2f} s)")
    try:
        fastgd.plot_history(history, "fastgd-digits-loss.png", title="digits 64-64-10")
        say("  loss curves written to fastgd-digits-loss.png")
    except ImportError:
        say("  (pip install 'fastgd[plot]' to have the loss curves drawn to fastgd-digits-loss.png)")
    return 0 if solved == 4 and accuracy >= 0.95 else 1


def compile_kernels(dtypes, out=sys.stdout, quiet=False) -> int:
    """Compile every kernel of ``dtypes`` into Numba's on-disk cache (or load it from there),
    printing each with its time, then the total (``fastgd.kernels.compile.compile_all``): per
    dtype the training loop, the entry point of ``predict``/``loss``/``gradients`` and the two
    passes they call. They serve every network and setting, so after this no fit compiles
    anything."""
    from fastgd.diagnostics import cache_status
    from fastgd.kernels import compile as compile_module
    from fastgd.kernels import jit

    if not jit.CACHE:
        print(f"fastgd: the compile cache is {cache_status()}; nothing would be kept", file=out)
        return 1
    start = time.perf_counter()
    results = compile_module.compile_all(dtypes, out=None if quiet else out)
    if not quiet:
        print(f"{len(results)} kernels in {time.perf_counter() - start:.1f} s; cache {cache_status()}", file=out)
    return 0


def _bench_context(kind):
    """What a result file of the ``--serve`` and ``--widths`` runs records beside its rows: the
    settings that are the same for every row."""
    if kind == "serve":
        from fastgd.bench import serve

        return dict(
            layer_sizes=list(serve.LAYER_SIZES),
            activation="relu",
            output_activation="softmax",
            dtype="float32",
            n_threads=1,
            request_rows=serve.REQUEST_ROWS,
            numpy_blas_threads=1,
            target_vs_numpy=serve.TARGET_VS_NUMPY,
            target_scaling=serve.TARGET_SCALING,
        )
    if kind == "widths":
        from fastgd.bench import widths

        return dict(
            outputs=widths.OUTPUTS,
            activation="sigmoid",
            output_activation="sigmoid",
            loss="mse",
            optimizer="sgd",
            lr=widths.LR,
            n_threads=1,
            steps_per_epoch=widths.STEPS_PER_EPOCH,
            cliff_ratio=widths.CLIFF,
        )
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastgd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="train XOR and a digits classifier, timed against the NumPy backend")
    bench = commands.add_parser("bench", help="time the benchmark workloads side by side, one process per run")
    from fastgd.bench import TARGET_VS_RELU
    from fastgd.bench.workloads import WORKLOADS

    bench.add_argument("workloads", nargs="*", help=f"some of: {' '.join(WORKLOADS)} (default: all)")
    bench.add_argument(
        "--threads", type=int, default=None, help="threads for every library (default: all usable cores)"
    )
    bench.add_argument("--repeats", type=int, default=3, help="rounds, interleaved across libraries; the best is kept")
    bench.add_argument("--peers", action="store_true", help="also PyTorch, JAX and scikit-learn, where installed")
    bench.add_argument(
        "--peer-python",
        action="append",
        default=[],
        metavar="LIBRARY=PYTHON",
        help="also a peer installed in another environment, run by that Python (jax, torch or sklearn), "
        "e.g. jax=/path/to/venv/bin/python; repeatable",
    )
    bench.add_argument(
        "--baseline",
        metavar="PYTHON",
        default=None,
        help="also another installed fastgd (e.g. a release in its own virtual environment), run by that "
        "Python on the same workloads, data and initial weights: a row 'fastgd VERSION' of its own, "
        "e.g. --baseline /path/to/venv-0.2.0/bin/python",
    )
    bench.add_argument(
        "--track-gradients", action="store_true", help="also fastgd recording gradient health (its cost)"
    )
    bench.add_argument(
        "--cold", action="store_true", help="instead: start-up, import + first one-epoch fit, cold and warm cache"
    )
    bench.add_argument(
        "--ranks",
        type=int,
        default=None,
        metavar="N",
        help="instead: data-parallel scaling on N ranks (mpiexec) against 1 rank on 1 and on N threads "
        "(default workloads: mid large)",
    )
    bench.add_argument(
        "--out-of-core",
        type=int,
        default=None,
        metavar="MB",
        help="instead: one epoch of mid streamed from a memory map 4x this memory budget, against in memory",
    )
    bench.add_argument(
        "--grid",
        action="store_true",
        help="instead: scikit-learn's GridSearchCV on the digits with scikit-learn's MLPClassifier and fastgd's "
        "(warm, cold, n_jobs=2), search time and accuracy per setting",
    )
    bench.add_argument(
        "--many",
        action="store_true",
        help="instead: fastgd.fit_many against the same models fitted one by one and JAX's vmap, ns per model-step "
        "(workloads: xor small grid, the cases of fastgd.bench.many)",
    )
    bench.add_argument(
        "--epoch-work",
        action="store_true",
        help="instead: a digits fit with validation, early stopping or a callback against the bare fit",
    )
    bench.add_argument(
        "--dropout",
        action="store_true",
        help="instead: dropout's cost per step (0.2 and 0.5 on every hidden layer against none)",
    )
    bench.add_argument(
        "--float64",
        action="store_true",
        help="instead: float64 against float32 per step, per activation (digits); with --activations: that "
        "sweep in float64 only",
    )
    bench.add_argument(
        "--activations",
        action="store_true",
        help="instead: the activation sweep, the workload (default: small) with each activation a hidden layer may "
        "have (on the output layer too), float32 and float64: µs/step, with --baseline the baseline's and "
        f"baseline/this, and over relu's step; targets: <= {TARGET_VS_RELU:g}x relu, >= 1x the baseline",
    )
    bench.add_argument(
        "--serve",
        action="store_true",
        help="instead: predict as a threaded web service calls it (64-256-256-10 relu/softmax float32, 32 rows a "
        "request, n_threads=1), requests/s from 1 and 2 Python threads on one network, against NumPy with BLAS "
        "on one thread; targets: 1 thread >= 1.5x NumPy, 2 threads >= 1.7x 1 thread",
    )
    bench.add_argument(
        "--serve-seconds", type=float, default=2.0, metavar="S", help="--serve: seconds of requests per run (default 2)"
    )
    bench.add_argument(
        "--widths",
        action="store_true",
        help="instead: the width sweep, µs per step of one hidden layer 4 to 64 wide (8, 24, 64 inputs; batch 32, 200; "
        "float32, float64; n_threads=1), cliffs flagged; target: a layer never runs slower than one twice as "
        "wide, within 10 %%",
    )
    bench.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write the results to PATH as JSON: date, CPU and its features, versions, the command, every figure",
    )
    compiler = commands.add_parser("compile", help="compile every kernel (both dtypes) into the on-disk cache")
    compiler.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    compiler.add_argument("--quiet", action="store_true", help="print nothing")
    commands.add_parser("config", help="print versions, threads, BLAS and the compile cache (for bug reports)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    if args.command == "bench":
        from fastgd.bench import cold_start, out_of_core, ranks, run

        baseline = None
        other_modes = (
            args.serve
            or args.widths
            or args.dropout
            or args.grid
            or args.many
            or args.epoch_work
            or args.cold
            or args.out_of_core is not None
            or args.ranks is not None
        )
        if args.baseline is not None and (other_modes or (args.float64 and not args.activations)):
            parser.error(
                "--baseline goes with the workloads table and --activations only (not with --serve, --widths, "
                "--cold...)"
            )
        if args.activations and (other_modes or args.peers or args.peer_python or args.track_gradients):
            parser.error("--activations goes with --float64, --baseline, --threads, --repeats and --json only")
        if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
            parser.error(f"--json {args.json}: its folder does not exist")  # before a run of minutes, not after

        if args.activations:
            from fastgd.bench import activations, parse_baseline

            try:  # before a run of minutes, not after
                baseline = parse_baseline(args.baseline)
            except ValueError as error:
                parser.error(str(error))
            dtypes = ["float64"] if args.float64 else ["float32", "float64"]
            kind, rows = (
                "activations",
                activations(
                    args.workloads, dtypes=dtypes, n_threads=args.threads, repeats=args.repeats, baseline=baseline
                ),
            )
        elif args.serve:
            from fastgd.bench.serve import serve

            if args.serve_seconds <= 0:
                parser.error(f"--serve-seconds must be > 0, got {args.serve_seconds}")
            kind, rows = "serve", serve(seconds=args.serve_seconds, repeats=args.repeats)
        elif args.widths:
            from fastgd.bench.widths import widths

            kind, rows = "widths", widths(repeats=args.repeats)
        elif args.float64:
            from fastgd.bench.float64 import float64_cost

            kind, rows = "float64", float64_cost(repeats=args.repeats)
        elif args.dropout:
            from fastgd.bench.userwork import dropout_cost

            kind, rows = "dropout", dropout_cost(repeats=args.repeats)
        elif args.many:
            from fastgd.bench.many import many

            try:
                kind, rows = "many", many(args.workloads, repeats=args.repeats)
            except ValueError as error:
                parser.error(str(error))
        elif args.grid or args.epoch_work:
            from fastgd.bench.userwork import epoch_work, grid

            kind, rows = (
                ("grid", grid(repeats=min(args.repeats, 2)))
                if args.grid
                else ("epoch-work", epoch_work(repeats=args.repeats))
            )
        elif args.cold:
            kind, rows = "cold", cold_start(args.workloads)
        elif args.out_of_core is not None:
            kind, rows = "out-of-core", out_of_core(args.out_of_core, repeats=args.repeats)
        elif args.ranks is not None:
            kind, rows = "ranks", ranks(args.workloads, n_ranks=args.ranks, repeats=args.repeats)
        else:
            from fastgd.bench import parse_baseline, parse_peer_pythons

            try:  # before a run of minutes, not after
                baseline = parse_baseline(args.baseline)
            except ValueError as error:
                parser.error(str(error))
            kind, rows = (
                "workloads",
                run(
                    args.workloads,
                    n_threads=args.threads,
                    repeats=args.repeats,
                    peers=args.peers,
                    track_gradients=args.track_gradients,
                    peer_pythons=parse_peer_pythons(args.peer_python),
                    baseline=baseline,
                ),
            )
        if args.json:
            from fastgd.bench.results import workload_definitions, write_results

            if kind in ("workloads", "ranks", "activations"):
                context = {"workloads": workload_definitions(sorted({r["workload"] for r in rows}))}
                if kind == "activations":
                    from fastgd.bench import TARGET_VS_RELU

                    context.update(
                        activations=list(dict.fromkeys(r["activation"] for r in rows)),
                        dtypes=list(dict.fromkeys(r["dtype"] for r in rows)),
                        target_vs_relu=TARGET_VS_RELU,
                    )
                if kind in ("workloads", "activations") and baseline:
                    context["baseline"] = {key: baseline[key] for key in ("python", "version", "path")}
            else:
                context = _bench_context(kind)
            write_results(args.json, kind, rows, command=argv, context=context)
            print(f"results written to {args.json}")
        return 0
    if args.command == "compile":
        return compile_kernels(args.dtype, quiet=args.quiet)
    from fastgd import show_config

    show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
