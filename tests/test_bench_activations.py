"""``python -m fastgd bench --activations``: the activation sweep. On a tiny configuration (the
``xor`` workload, float64 only, one round) it prints a row for every activation fastgd's table
lets a hidden layer have, trains each with that activation, and against a baseline release that
lacks some of them prints ``n/a`` for those instead of failing. No timing is asserted here."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastgd.bench.results import read_results
from fastgd.bench.worker import StandaloneWorkload, write_standalone
from fastgd.bench.workloads import WORKLOADS, resolve
from fastgd.registry import ACTIVATIONS

TIMEOUT = 240

# A stand-in for an older release whose Network knows only four activations and refuses the
# others as a release does (ValueError naming it). Its fit trains nothing: it reports the loss of
# the weights it holds under the activation it was given (every layer, as mse's output layer),
# so that the test sees which activation, weights and data reached it.
FAKE_FASTGD = """
import numpy as np

__version__ = "0.0.1"

FORMS = {"identity": lambda z: z, "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)), "tanh": np.tanh,
         "relu": lambda z: np.maximum(z, 0.0)}


class SGD:
    def __init__(self, lr=0.001, momentum=0.0):
        self.lr = lr


class Adam(SGD):
    pass


class History:
    def __init__(self, loss):
        self.loss = [loss]


class Network:
    def __init__(self, layer_sizes, activation="sigmoid", loss="mse", dtype="float64", random_state=None,
                 n_threads=None):
        if activation not in FORMS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(FORMS)}")
        self.activation = activation
        self.weights = [np.zeros((a, b), dtype) for a, b in zip(layer_sizes[:-1], layer_sizes[1:])]
        self.biases = [np.zeros(b, dtype) for b in layer_sizes[1:]]

    def copy(self):
        clone = Network.__new__(Network)
        clone.activation = self.activation
        clone.weights = [W.copy() for W in self.weights]
        clone.biases = [b.copy() for b in self.biases]
        return clone

    def fit(self, X, Y, optimizer=None, epochs=1, batch_size=None, shuffle=True):
        a = X
        for W, b in zip(self.weights, self.biases):
            a = FORMS[self.activation](a @ W + b)
        return History(float(0.5 * np.mean(np.sum((a - Y) ** 2, axis=1))))
"""
FAKE_KNOWS = ("identity", "sigmoid", "tanh", "relu")


@pytest.fixture
def old_release(tmp_path):
    """A virtual environment whose fastgd is ``FAKE_FASTGD`` (NumPy borrowed from this one)."""
    venv = tmp_path / "old-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=TIMEOUT)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    ).stdout.strip()
    os.makedirs(os.path.join(site, "fastgd"))
    with open(os.path.join(site, "fastgd", "__init__.py"), "w") as handle:
        handle.write(textwrap.dedent(FAKE_FASTGD))
    with open(os.path.join(site, "numpy-from-the-test.pth"), "w") as handle:
        handle.write(os.path.dirname(os.path.dirname(np.__file__)) + "\n")
    return str(python)


def _hidden_activations():
    # Read from the table here, independently of the bench's own list.
    return [name for name, spec in ACTIVATIONS.items() if not spec.output_only]


def _initial_loss(activation):
    """The loss of xor's initial weights under ``activation`` (what the fake reports)."""
    workload = resolve(f"xor,activation={activation}")
    net = workload.network()
    X, Y = workload.data()
    a = X
    for W, b in zip(net.weights, net.biases):
        z = a @ W + b
        a = ACTIVATIONS[activation].numpy_value(z)
    return float(0.5 * np.mean(np.sum((a - Y) ** 2, axis=1)))


def test_a_variant_of_a_workload_carries_its_activation_and_dtype(tmp_path):
    workload = resolve("small,activation=gelu,dtype=float64")
    assert (workload.name, workload.activation, workload.dtype) == ("small", "gelu", "float64")
    assert workload.layer_sizes == WORKLOADS["small"].layer_sizes and WORKLOADS["small"].activation == "sigmoid"
    net = workload.network()
    assert net.activation == "gelu" and net.output_activation == "gelu" and net.dtype == np.float64
    assert resolve("small") is WORKLOADS["small"]
    for bad in ("small,activation", "small,epochs=3", "nope,activation=relu", "small,dtype=float64,dtype=float32"):
        with pytest.raises(ValueError):
            resolve(bad)
    # The standalone file (another environment's run) carries the activation and the peers' names of it.
    path = str(tmp_path / "small.npz")
    write_standalone(workload, path)
    standalone = StandaloneWorkload(path)
    assert standalone.activation == "gelu" and standalone.dtype == "float64"
    assert (
        list(standalone.peer_activation["torch"]) == ["GELU", {"approximate": "none"}]
        and standalone.peer_activation["sklearn"] is None
    )


def test_the_sweep_prints_a_row_per_activation_and_n_a_where_the_baseline_lacks_one(old_release, tmp_path):
    path = tmp_path / "sweep.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastgd",
            "bench",
            "xor",
            "--activations",
            "--float64",
            "--repeats",
            "1",
            "--baseline",
            old_release,
            "--json",
            str(path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    swept = _hidden_activations()
    assert {"relu", "gelu", "silu"} <= set(swept) and "softmax" not in swept
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line and set(line) == {"-"})
    assert "µs/step" in lines[start - 1] and "fastgd 0.0.1 µs" in lines[start - 1] and "vs relu" in lines[start - 1]
    rows = {}
    for line in lines[start + 1 :]:
        match = re.match(r"^xor\s+(\S+)\s+float64\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+\.\d\d)x\s+(met|missed)", line)
        if match:
            rows[match[1]] = match.groups()[1:5]
    assert list(rows) == swept  # a row per activation, in the table's order
    for activation, (mine, theirs, ratio, _vs_relu) in rows.items():
        assert float(mine) > 0
        if activation in FAKE_KNOWS:
            assert float(theirs) > 0 and re.fullmatch(
                r"\d+\.\d\dx", ratio
            )  # the fake trains nothing: its ratio may print 0.00x
        else:
            assert (theirs, ratio) == ("n/a", "n/a"), activation
            assert f"n/a: fastgd 0.0.1's Network refuses activation {activation!r}" in done.stdout
    assert rows["relu"][3] == "1.00"
    record = read_results(path)
    assert (
        record["kind"] == "activations"
        and record["context"]["activations"] == swept
        and record["context"]["dtypes"] == ["float64"]
    )
    assert record["context"]["baseline"]["version"] == "0.0.1"
    assert [(row["activation"], row["dtype"], row["workload"]) for row in record["rows"]] == [
        (a, "float64", "xor") for a in swept
    ]
    for row in record["rows"]:
        assert row["version"] != "0.0.1" and row["us_per_step"] > 0 and row["vs_relu"] > 0
        if row["activation"] in FAKE_KNOWS:
            assert row["speedup"] == pytest.approx(row["baseline_us_per_step"] / row["us_per_step"])
            # The baseline built its Network with the row's activation, from the same weights and data.
            assert row["baseline_final_loss"] == pytest.approx(_initial_loss(row["activation"]), rel=1e-9)
            assert row["baseline_unsupported"] is None
        else:
            assert row["speedup"] is None and row["baseline_us_per_step"] is None
            assert repr(row["activation"]) in row["baseline_unsupported"]


def test_the_sweep_refuses_the_other_modes(tmp_path):
    for extra in (["--widths"], ["--peers"], ["--serve"]):
        done = subprocess.run(
            [sys.executable, "-m", "fastgd", "bench", "--activations", *extra],
            check=False,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        assert done.returncode == 2 and "--activations" in done.stderr, extra
