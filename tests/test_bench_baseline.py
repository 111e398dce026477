"""``python -m fastgd bench --baseline PYTHON``: another installed fastgd (a release in a virtual
environment of its own) timed beside this one, by its own Python, on the same workloads, data and
initial weights. The option is refused by name when it cannot work; the baseline's worker imports
that environment's fastgd, not this checkout's; and a real run prints and records the baseline's
row like the others. No timing is asserted here."""

import json
import os
import re
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastgd
from fastgd.bench import _worker, parse_baseline
from fastgd.bench.results import read_results
from fastgd.bench.worker import StandaloneWorkload, write_standalone
from fastgd.bench.workloads import WORKLOADS

TIMEOUT = 240

# A stand-in for another release: a ``fastgd`` package with the public API the baseline's worker
# uses (``Network`` with ``weights``/``biases`` views, ``copy``, ``fit``; ``SGD``; ``Adam``). Its
# fit trains nothing: it reports the loss of the weights it holds (½‖a − y‖² averaged over rows,
# sigmoid layers), so that the test sees which weights and data reached it.
FAKE_FASTGD = """
import numpy as np

__version__ = "9.9.9"


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
        self.dtype = np.dtype(dtype)
        self._params = [(np.zeros((a, b), self.dtype), np.zeros(b, self.dtype))
                        for a, b in zip(layer_sizes[:-1], layer_sizes[1:])]
        self.weights = [W for W, _ in self._params]
        self.biases = [b for _, b in self._params]

    def copy(self):
        clone = Network.__new__(Network)
        clone.dtype = self.dtype
        clone._params = [(W.copy(), b.copy()) for W, b in self._params]
        clone.weights = [W for W, _ in clone._params]
        clone.biases = [b for _, b in clone._params]
        return clone

    def fit(self, X, Y, optimizer=None, epochs=1, batch_size=None, shuffle=True):
        a = X
        for W, b in self._params:
            a = 1.0 / (1.0 + np.exp(-(a @ W + b)))
        return History(float(0.5 * np.mean(np.sum((a - Y) ** 2, axis=1))))
"""


def _bench(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "fastgd", "bench", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def _table(text):
    """The table's data lines as (workload, library, the other columns): the library column may
    hold a space (``fastgd 0.2.0``), so a line is split around its µs/step and "fastgd is"."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line and set(line) == {"-"})
    rows = []
    for line in lines[start + 1 :]:
        match = re.match(r"^(\S+)\s+(\S.*?)\s+(\S+)\s+(\d+\.\d\d)x\s", line)
        if match:
            rows.append((match[1], match[2], float(match[3]), float(match[4])))
    return rows


@pytest.fixture
def fake_release(tmp_path):
    """A virtual environment whose fastgd is ``FAKE_FASTGD`` (NumPy borrowed from this one);
    returns its Python."""
    venv = tmp_path / "fake-venv"
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
    with open(
        os.path.join(site, "numpy-from-the-test.pth"), "w"
    ) as handle:  # NumPy only: no .pth of this environment runs
        handle.write(os.path.dirname(os.path.dirname(np.__file__)) + "\n")
    return str(python), os.path.join(site, "fastgd")


def test_a_baseline_that_is_not_an_executable_is_refused_by_name(tmp_path):
    text_file = tmp_path / "python"
    text_file.write_text("not a program")
    text_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    for python in (str(tmp_path / "absent" / "python"), str(text_file), str(tmp_path), ""):
        with pytest.raises(ValueError, match="--baseline"):
            parse_baseline(python)
    # On the command line: an argparse error (exit status 2) before anything is measured.
    done = _bench(["xor", "--repeats", "1", "--baseline", str(text_file)], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "--baseline" in done.stderr and str(text_file) in done.stderr and "not an executable" in done.stderr
    assert "µs/step" not in done.stdout and "GFLOP/s" not in done.stdout


def test_a_baseline_python_without_fastgd_is_refused_by_name(tmp_path):
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'fastgd'\" >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(ValueError, match=r"--baseline .*cannot import fastgd[\s\S]*No module named 'fastgd'"):
        parse_baseline(str(script))
    done = _bench(["xor", "--baseline", str(script)], cwd=tmp_path)
    assert done.returncode == 2 and "--baseline" in done.stderr and "cannot import fastgd" in done.stderr
    assert "µs/step" not in done.stdout


def test_baseline_only_goes_with_the_workloads_table(tmp_path):
    done = _bench(["--widths", "--baseline", sys.executable], cwd=tmp_path)
    assert done.returncode == 2 and "--baseline" in done.stderr


def _checkout_on_pythonpath(monkeypatch):
    # The folder that holds this fastgd, and the worker file's own folder, on PYTHONPATH: the
    # baseline's Python must import its own fastgd all the same (it runs isolated, ``-I``).
    here = os.path.dirname(os.path.abspath(fastgd.__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.path.dirname(here), os.path.join(here, "bench")]))


def test_the_baseline_is_labelled_with_the_version_its_own_python_imports(fake_release, monkeypatch):
    python, package = fake_release
    _checkout_on_pythonpath(monkeypatch)
    assert parse_baseline(python) == dict(python=python, version="9.9.9", path=package, label="fastgd 9.9.9")
    mine = parse_baseline(sys.executable)
    assert mine["version"] == fastgd.__version__ and mine["label"] == f"fastgd {fastgd.__version__}"
    assert mine["path"] == os.path.dirname(os.path.abspath(fastgd.__file__))


def test_the_baseline_worker_trains_with_its_own_fastgd_from_the_standalone_weights(
    fake_release, tmp_path, monkeypatch
):
    # The worker file is this checkout's, run by the other Python: it must import that
    # environment's fastgd (the fake), and hand it the standalone workload's data and weights.
    python, package = fake_release
    path = str(tmp_path / "xor.npz")
    write_standalone(WORKLOADS["xor"], path)
    _checkout_on_pythonpath(monkeypatch)
    result = _worker("fastgd", path, 1, python=python, isolated=True)
    assert result["version"] == "9.9.9" and result["fastgd_path"] == package
    assert result["library"] == "fastgd" and result["workload"] == "xor"
    assert result["seconds"] > 0 and result["compile_seconds"] >= 0
    assert result["us_per_step"] == pytest.approx(result["seconds"] / WORKLOADS["xor"].steps * 1e6)
    workload = StandaloneWorkload(path)
    X, Y = workload.data()
    a = X
    for W, b in zip(*workload.initial):
        a = 1.0 / (1.0 + np.exp(-(a @ W + b)))
    assert result["final_loss"] == pytest.approx(0.5 * np.mean(np.sum((a - Y) ** 2, axis=1)), rel=1e-12)
    # The initial weights are fastgd's Network(random_state=0)'s, not the fake's zeros.
    assert all(np.abs(W).sum() > 0 for W in workload.initial[0])


def test_a_baseline_run_prints_and_records_its_row_beside_fastgds(tmp_path):
    # The baseline is this very environment (sys.executable): its row must train exactly what
    # fastgd's row trains (the same final loss), labelled with the version it reports.
    path = tmp_path / "xor.json"
    done = _bench(["xor", "--repeats", "1", "--baseline", sys.executable, "--json", str(path)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    label = f"fastgd {fastgd.__version__}"
    package = os.path.dirname(os.path.abspath(fastgd.__file__))
    assert f"(baseline: fastgd {fastgd.__version__} from {package}, run by {sys.executable})" in done.stdout
    table = done.stdout[done.stdout.index("(baseline:") :]
    assert table.index("(baseline:") < table.index("µs/step")  # the line is above the table
    rows = _table(done.stdout)
    assert [(workload, library) for workload, library, _, _ in rows] == [
        ("xor", "fastgd"),
        ("xor", label),
        ("xor", "fastgd-numpy"),
    ]
    assert rows[0][3] == 1.0
    assert all(us > 0 and ratio > 0 for _, _, us, ratio in rows)
    record = read_results(path)
    assert [row["label"] for row in record["rows"]] == ["fastgd", label, "fastgd-numpy"]
    mine, baseline, _ = record["rows"]
    assert baseline["baseline"] is True and "baseline" not in mine
    assert (
        baseline["python"] == sys.executable
        and baseline["version"] == fastgd.__version__
        and baseline["fastgd_path"] == package
    )
    assert baseline["runtime"] == "Numba" and baseline["library"] == "fastgd"
    # "fastgd is": the baseline's time over this fastgd's, printed as in the table.
    assert baseline["speedup"] == pytest.approx(baseline["seconds"] / mine["seconds"])
    assert f"{baseline['speedup']:.2f}" == f"{rows[1][3]:.2f}" and f"{baseline['us_per_step']:.4g}" in done.stdout
    # The same network, weights, data and steps: the same final loss (XOR, float64, bitwise here).
    assert baseline["final_loss"] == pytest.approx(mine["final_loss"], rel=1e-12)
    assert record["context"]["baseline"] == dict(python=sys.executable, version=fastgd.__version__, path=package)
    assert json.loads(path.read_text())["rows"][1]["label"] == label
