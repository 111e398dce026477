"""Command line: ``python -m fastgd demo``, ``python -m fastgd bench`` and ``python -m fastgd config``."""

from __future__ import annotations

import argparse
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


def _warm_up(net, X, y, optimizer, batch_size=None):
    """First call of a dtype: compiles the kernels, or loads them from Numba's on-disk cache."""
    start = time.perf_counter()
    net.copy().fit(X[:2], y[:2], optimizer=optimizer, epochs=1, batch_size=batch_size)
    return time.perf_counter() - start


def demo(out=sys.stdout) -> int:
    import numba

    import fastgd
    from fastgd.datasets import load_digits, xor

    def say(text=""):
        print(text, file=out, flush=True)

    say(f"fastgd {fastgd.__version__} demo: numba backend, {numba.get_num_threads()} threads\n")

    X, y = xor()
    say("XOR: 2-4-1 sigmoid network, loss sse, SGD lr=0.1, full batch, 10 000 epochs")
    say("     (weights drawn like the classic code: np.random.seed(42), uniform in [-1, 1))")
    fast = fastgd.Network([2, 4, 1], loss="sse", init="uniform", random_state=np.random.RandomState(42))
    slow = fast.copy(backend="numpy")
    compile_seconds = _warm_up(fast, X, y, fastgd.SGD(lr=0.1))
    optimizer = fastgd.SGD(lr=0.1)
    fast_seconds = _timed_fit(
        fast, X, y, optimizer, 10_000, 10, report=lambda e, loss: say(f"  epoch {e:6d}   loss mean(½(y−a)²) = {loss / 4:.6f}")
    )
    slow_seconds = _timed_fit(slow, X, y, fastgd.SGD(lr=0.1), 10_000, 1)
    prediction = fast.predict(X).ravel()
    solved = int((np.round(prediction) == y.ravel()).sum())
    say(f"  outputs {np.array2string(prediction, precision=3)}  ->  {solved}/4 correct")
    say(f"  time: numba {fast_seconds:.3f} s, numpy backend {slow_seconds:.3f} s  ->  {slow_seconds / fast_seconds:.0f}x faster")
    say(f"        (first call, compiling or loading the compile cache: {compile_seconds:.2f} s)\n")

    X_train, X_test, y_train, y_test = load_digits()
    options = dict(epochs=200, batch_size=32, validation_split=0.1, early_stopping=True, patience=15)
    say("Digits: 64-64-10 tanh/softmax network, crossentropy, Adam lr=1e-3, batch 32, up to 200 epochs,")
    say(f"        10% of the {len(y_train)} training images held out for early stopping (patience 15);")
    say(f"        {len(y_test)} more images held out for the test accuracy")
    fast = fastgd.Network([64, 64, 10], activation="tanh", loss="crossentropy", dtype="float32", random_state=0)
    slow = fast.copy(backend="numpy")
    compile_seconds = _warm_up(fast, X_train, y_train, fastgd.Adam(lr=1e-3), batch_size=32)
    start = time.perf_counter()
    history = fast.fit(X_train, y_train, optimizer=fastgd.Adam(lr=1e-3), verbose=1, **options)
    fast_seconds = time.perf_counter() - start
    start = time.perf_counter()
    slow.fit(X_train, y_train, optimizer=fastgd.Adam(lr=1e-3), **options)
    slow_seconds = time.perf_counter() - start
    accuracy = np.mean(fast.predict(X_test).argmax(axis=1) == y_test)
    stopped = f"stopped after epoch {history.stopped_epoch}" if history.stopped_epoch else "ran all epochs"
    say(f"  {stopped}; best validation loss {min(history.val_loss):.4f} at epoch {history.best_epoch} (weights restored)")
    say(f"  test accuracy {accuracy:.3f}")
    say(f"  time: numba {fast_seconds:.3f} s, numpy backend {slow_seconds:.3f} s  ->  {slow_seconds / fast_seconds:.1f}x faster")
    say(f"        (first call, compiling or loading the compile cache: {compile_seconds:.2f} s)")
    try:
        fastgd.plot_history(history, "fastgd-digits-loss.png", title="digits 64-64-10")
        say("  loss curves written to fastgd-digits-loss.png")
    except ImportError:
        say("  (pip install 'fastgd[plot]' to have the loss curves drawn to fastgd-digits-loss.png)")
    return 0 if solved == 4 and accuracy >= 0.95 else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastgd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="train XOR and a digits classifier, timed against the NumPy backend")
    bench = commands.add_parser("bench", help="time the benchmark workloads against the NumPy backend")
    bench.add_argument("workloads", nargs="*", help="some of: xor small mid large digits (default: all)")
    bench.add_argument("--threads", type=int, default=None, help="threads for Numba and BLAS (default: all)")
    bench.add_argument("--repeats", type=int, default=3, help="best of this many timings of the Numba backend")
    commands.add_parser("config", help="print versions, threads, BLAS and the compile cache (for bug reports)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    if args.command == "bench":
        from fastgd.bench import run

        run(args.workloads, n_threads=args.threads, repeats=args.repeats)
        return 0
    from fastgd import show_config

    show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
