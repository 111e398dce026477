"""scikit-learn's own MLP tests, run against fastgd's estimators.

scikit-learn installs its tests with the package (``sklearn/neural_network/tests/test_mlp.py``).
``build(folder)`` writes that file into ``folder`` with scikit-learn's estimators' import replaced
by fastgd's (nothing else changes; the file is never copied into this repository), and a
``conftest.py`` giving the ``global_random_seed`` fixture scikit-learn's own conftest provides.
``PRIVATE`` names the tests that read scikit-learn's private attributes (``_optimizer``,
``_no_improvement_count``, ``_backprop``...), which fastgd does not have; fastgd's own tests
check what they check (tests/test_sklearn.py).

Run by hand: ``python tests/sklearn_suite.py`` (pytest's output, then its exit status).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
REPLACEMENT = "from fastgd.sklearn import MLPClassifier, MLPRegressor"
PRIVATE = (
    "test_fit",
    "test_gradient",
    "test_learning_rate_warmstart",
    "test_adaptive_learning_rate",
    "test_n_iter_no_change",
    "test_n_iter_no_change_inf",
)
# scikit-learn's conftest draws the seed from SKLEARN_TESTS_GLOBAL_RANDOM_SEED (42 by default).
CONFTEST = """
import os
import pytest

_SEEDS = os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED", "42")
SEEDS = list(range(100)) if _SEEDS == "all" else [int(s) for s in _SEEDS.split("-")] if "-" not in _SEEDS else list(
    range(int(_SEEDS.split("-")[0]), int(_SEEDS.split("-")[1]) + 1))


@pytest.fixture(params=SEEDS)
def global_random_seed(request):
    return request.param
"""


def source() -> pathlib.Path:
    spec = importlib.util.find_spec("sklearn")
    path = pathlib.Path(spec.origin).parent / "neural_network" / "tests" / "test_mlp.py"
    if not path.exists():
        raise FileNotFoundError(f"scikit-learn's MLP tests are not installed at {path}")
    return path


def build(folder) -> pathlib.Path:
    """Write the suite into ``folder``; returns the test file's path."""
    text = source().read_text()
    if text.count(IMPORT) != 1:
        raise RuntimeError(f"scikit-learn's test_mlp.py no longer imports its estimators as {IMPORT!r}")
    folder = pathlib.Path(folder)
    target = folder / "test_mlp_fastgd.py"
    target.write_text(text.replace(IMPORT, REPLACEMENT))
    (folder / "conftest.py").write_text(CONFTEST)
    return target


def run(folder, extra=(), timeout=1500) -> subprocess.CompletedProcess:
    """Build the suite in ``folder`` and run it (every public-API test) in a pytest process."""
    target = build(folder)
    deselect = [f"--deselect={target.name}::{name}" for name in PRIVATE]
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--rootdir",
        str(folder),
        target.name,
        *deselect,
        *extra,
    ]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        result = run(folder, sys.argv[1:])
        print(result.stdout[-20000:], result.stderr[-5000:])
        sys.exit(result.returncode)
