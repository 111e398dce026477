"""``python -m fastgd bench --widths``: the width sweep, µs per step as a hidden layer widens.

One hidden layer and two outputs, sigmoid hidden and sigmoid output, mse loss, SGD lr 0.1,
``n_threads=1``, no shuffling; hidden widths 4, 8, 16, 32 and 64, for 8, 24 and 64 inputs,
batches of 32 and 200, in float32 and float64, on ``STEPS_PER_EPOCH`` batches of random data.
µs per step is a fit's time over its steps, timed after a warm-up fit (which compiles, or loads
the compile cache, and sizes the timed fits to about ``FIT_SECONDS``), best of the rounds.

Each (dtype, inputs, batch) row is a process of its own (``python -m fastgd.bench.widths DTYPE
INPUTS BATCH REPEATS WIDTH ...``, one JSON line), its widths' rounds interleaved. The target: a
layer never runs slower than one twice as wide, within 10 %; a width whose µs per step is more
than 1.1x that of twice its width is flagged as a cliff (``!`` in the table).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

DTYPES = ("float32", "float64")
INPUTS = (8, 24, 64)
BATCHES = (32, 200)
WIDTHS = (4, 8, 16, 32, 64)
OUTPUTS = 2
STEPS_PER_EPOCH = 10
LR = 0.1
# A timed fit runs about this long (whole epochs, at least MIN_EPOCHS).
FIT_SECONDS = 0.05
MIN_EPOCHS = 5
CLIFF = 1.10
TIMEOUT = 600


def _setting(dtype, n_inputs, batch, width):
    from ..network import Network

    rng = np.random.default_rng(0)
    rows = STEPS_PER_EPOCH * batch
    X = rng.standard_normal((rows, n_inputs)).astype(dtype)
    Y = rng.random((rows, OUTPUTS)).astype(dtype)
    net = Network(
        [n_inputs, width, OUTPUTS],
        activation="sigmoid",
        output_activation="sigmoid",
        loss="mse",
        dtype=dtype,
        random_state=0,
        n_threads=1,
    )
    return net, X, Y


def measure(dtype, n_inputs, batch, widths=WIDTHS, repeats=3):
    """One row of the sweep in this process: {width: best µs per step}, rounds interleaved."""
    from ..optimizers import SGD

    settings = {}
    for width in widths:
        net, X, Y = _setting(dtype, n_inputs, batch, width)
        net.copy().fit(X, Y, optimizer=SGD(lr=LR), epochs=1, batch_size=batch, shuffle=False)  # compile or load
        start = time.perf_counter()
        net.copy().fit(X, Y, optimizer=SGD(lr=LR), epochs=MIN_EPOCHS, batch_size=batch, shuffle=False)
        per_epoch = (time.perf_counter() - start) / MIN_EPOCHS
        epochs = max(MIN_EPOCHS, math.ceil(FIT_SECONDS / max(per_epoch, 1e-9)))
        settings[width] = (net, X, Y, epochs)
    best = {}
    for _ in range(repeats):
        for width, (net, X, Y, epochs) in settings.items():
            copy = net.copy()
            start = time.perf_counter()
            copy.fit(X, Y, optimizer=SGD(lr=LR), epochs=epochs, batch_size=batch, shuffle=False)
            us = (time.perf_counter() - start) / (epochs * STEPS_PER_EPOCH) * 1e6
            best[width] = min(best.get(width, math.inf), us)
    return {str(width): best[width] for width in widths}


def cliffs(us_per_step: dict) -> list:
    """``[(width, twice the width, ratio), ...]`` where ``width`` runs more than ``CLIFF`` times
    slower than twice its width (both measured)."""
    found = []
    for width, us in us_per_step.items():
        wider = us_per_step.get(2 * width)
        if wider is not None and us > CLIFF * wider:
            found.append((width, 2 * width, us / wider))
    return found


def _child(dtype, n_inputs, batch, widths, repeats):
    command = [
        sys.executable,
        "-m",
        "fastgd.bench.widths",
        dtype,
        str(n_inputs),
        str(batch),
        str(repeats),
        *map(str, widths),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"widths {dtype} {n_inputs} inputs batch {batch} failed:\n{done.stderr[-3000:]}")
    return {int(width): us for width, us in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def widths(dtypes=None, inputs=None, batches=None, hidden=None, repeats=3, out=None):
    """Print the width-sweep table (module docstring) and return its rows, one per (dtype,
    inputs, batch): ``us_per_step`` {width: µs} (also ``us_w4``... for flat tables) and
    ``cliffs``. The defaults are the module's ``DTYPES``, ``INPUTS``, ``BATCHES``, ``WIDTHS``."""
    from ..diagnostics import cpu_name

    dtypes, inputs = tuple(dtypes or DTYPES), tuple(inputs or INPUTS)
    batches, hidden = tuple(batches or BATCHES), tuple(hidden or WIDTHS)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    bad = [w for w in (*inputs, *batches, *hidden) if int(w) != w or w < 1]
    if bad:
        raise ValueError(f"inputs, batches and widths must be positive integers, got {bad}")
    print(
        f"{datetime.date.today()}  CPU: {cpu_name()} ({os.cpu_count()} logical cores); INPUTS-WIDTH-{OUTPUTS} "
        "sigmoid/sigmoid, mse, "
        f"SGD lr {LR}, n_threads=1, {STEPS_PER_EPOCH} batches of random data; µs per step, best of {repeats} "
        "interleaved rounds, "
        f"a process per row",
        file=out,
    )
    header = f"{'dtype':<8} {'inputs':>6} {'batch':>5} " + " ".join(f"{f'w={w}':>9}" for w in hidden) + "  cliffs"
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for dtype in dtypes:
        for n_inputs in inputs:
            for batch in batches:
                us = _child(dtype, n_inputs, batch, hidden, repeats)
                found = cliffs(us)
                flagged = {width for width, _, _ in found}
                cells = " ".join(f"{us[w]:>8.1f}{'!' if w in flagged else ' '}" for w in hidden)
                notes = ", ".join(f"{w} is {ratio:.2f}x {wider}" for w, wider, ratio in found)
                print(f"{dtype:<8} {n_inputs:>6} {batch:>5} {cells}  {notes}", file=out, flush=True)
                row = dict(
                    dtype=dtype,
                    inputs=n_inputs,
                    batch=batch,
                    widths=list(hidden),
                    us_per_step={str(w): us[w] for w in hidden},
                )
                row.update({f"us_w{w}": us[w] for w in hidden})
                row["cliffs"] = [dict(width=w, twice=wider, ratio=ratio) for w, wider, ratio in found]
                rows.append(row)
    total = sum(len(row["cliffs"]) for row in rows)
    print(
        f"target: a layer never runs slower than one twice as wide, within {round((CLIFF - 1) * 100)} % "
        f"(! : a cliff; {total} found)",
        file=out,
    )
    return rows


def main(argv):
    dtype, n_inputs, batch, repeats = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    hidden = tuple(int(w) for w in argv[4:]) or WIDTHS
    print(json.dumps(measure(dtype, n_inputs, batch, hidden, repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
