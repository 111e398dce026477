"""Compile once per machine (kernels.build, kernels.pieces): a new configuration compiles only the
pieces it has not used, a cold fit's pieces are compiled by a helper process beside the loop,
the background fill and ``python -m fastgd compile`` leave nothing for a later fit to compile.

Each test runs its fits in fresh processes with a compile cache of their own, bounded by a
timeout."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

TIMEOUT = 600

FIT = """
import json, sys
import numpy as np
import fastgd
from fastgd.kernels import build, pieces
rng = np.random.default_rng(0)
X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, size=40)
results = []
for activation, optimizer, dtype in json.loads(sys.argv[1]):
    before = len(build.COMPILED), len(pieces.LOG)
    net = fastgd.Network([5, 6, 3], activation=activation, loss="crossentropy", dtype=dtype, random_state=0)
    net.fit(X, y, optimizer=optimizer, epochs=3, batch_size=8)
    results.append({
        "compiled": [label for label, _ in build.COMPILED[before[0]:]],
        "pieces": [name for name, _, seconds in pieces.LOG[before[1]:]],
        "prediction": net.predict(X).tolist(),
    })
print(json.dumps({"results": results, "misses": {name: sum(piece.dispatcher.stats.cache_misses.values())
                  for name, piece in pieces.PIECES.items()}}))
"""


def run_fits(cache, settings, **env):
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(cache), FASTGD_BACKGROUND_COMPILE="0", FASTGD_COMPILE_HELPER="0")
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", FIT, json.dumps(settings)], capture_output=True, text=True, env=environment,
                          timeout=TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_new_configuration_compiles_only_the_pieces_it_has_not_used(tmp_path):
    found = run_fits(tmp_path, [["sigmoid", "adam", "float64"], ["tanh", "adam", "float64"], ["relu", "sgd", "float64"],
                                ["relu", "sgd", "float64"]])  # fmt: skip
    first, tanh, relu_sgd, again = found["results"]
    assert "loop:loop:float64" in first["compiled"]
    # The loop, the passes, the loss and the products serve every configuration: the second
    # network (another activation) needed only its activation's piece, the third only its
    # activation's and its optimizer's, the fourth (a configuration seen before) nothing.
    assert tanh["compiled"] == [] and tanh["pieces"] == ["activation_tanh"]
    assert relu_sgd["compiled"] == [] and sorted(relu_sgd["pieces"]) == ["activation_relu", "update_sgd"]
    assert again["compiled"] == [] and again["pieces"] == []
    # Each piece was compiled once (a miss of the cache) and never again.
    assert all(misses <= 1 for misses in found["misses"].values()), found["misses"]


def test_a_helper_process_compiles_a_cold_fits_pieces_and_the_results_are_the_same(tmp_path):
    setting = [["sigmoid", "adam", "float32"]]
    alone = run_fits(tmp_path / "alone", setting)["results"][0]
    helped = run_fits(tmp_path / "helped", setting, FASTGD_COMPILE_HELPER="1")
    result = helped["results"][0]
    # This process compiled the loop and its share of the pieces; every other piece it loaded
    # came from the helper's cache entries (no cache miss here).
    assert result["compiled"][0] == "loop:loop:float32", result["compiled"]
    here = {label.split(":")[1] for label in result["compiled"][1:]}
    by_helper = set(result["pieces"]) - here
    assert by_helper and here, (result["compiled"], result["pieces"])
    assert sum(helped["misses"].values()) == len(here), (helped["misses"], here)
    assert {name for name, misses in helped["misses"].items() if misses} == here
    assert result["prediction"] == alone["prediction"]


def test_the_background_fill_leaves_nothing_to_compile(tmp_path):
    # A cold fit starts the background fill; once it has finished, another process training a
    # configuration in the other dtype, with other activations and optimizer, compiles nothing.
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FASTGD_BACKGROUND_COMPILE="1", FASTGD_COMPILE_HELPER="0")
    code = FIT.replace("print(json.dumps(", "print(json.dumps({'background': build._BACKGROUND.pid if build._BACKGROUND else None}));print(json.dumps(")
    done = subprocess.run([sys.executable, "-c", code, json.dumps([["sigmoid", "adam", "float64"]])], capture_output=True, text=True,
                          env=environment, timeout=TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    pid = json.loads(done.stdout.splitlines()[-2])["background"]
    assert pid, "the cold fit started no background fill"
    deadline = time.monotonic() + TIMEOUT
    while _alive(pid):
        assert time.monotonic() < deadline, "the background fill did not finish"
        time.sleep(1.0)
    later = run_fits(tmp_path, [["tanh", "rmsprop", "float32"], ["leaky_relu", "adagrad", "float64"]])
    for result in later["results"]:
        assert result["compiled"] == [], result
    assert sum(later["misses"].values()) == 0, later["misses"]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A finished child of a process that has exited is reaped by init; a zombie counts as done.
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().split()[2] != "Z"
    except OSError:
        return False


def test_compile_command_compiles_every_kernel_of_both_dtypes(tmp_path):
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FASTGD_BACKGROUND_COMPILE="0")
    done = subprocess.run([sys.executable, "-m", "fastgd", "compile"], capture_output=True, text=True, env=environment,
                          timeout=TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    from fastgd.kernels import build

    catalog = build.catalog()
    for target in catalog:  # one line per kernel, with its time
        assert any(target.dtype in line and f" {target.name} " in line and line.rstrip().endswith(("s", "(cached)")) for line in lines), target
    assert f"{len(catalog)} kernels" in lines[-1] and "MB" in lines[-1]
    later = run_fits(tmp_path, [["softplus", "momentum", "float32"]])
    assert all(result["compiled"] == [] for result in later["results"])
    assert sum(later["misses"].values()) == 0, later["misses"]


def test_a_piece_called_from_python_matches_its_twin():
    # kernels.pieces.run: the trampoline tests and the layer kernels reach pieces through.
    from fastgd import reference
    from fastgd.kernels import activations, pieces
    from fastgd.kernels.layout import FORWARD

    rng = np.random.default_rng(0)
    z = rng.normal(size=12)
    out = z.copy()
    pieces.run("activation_tanh", np.float64, FORWARD, out, 0, out.size, 12, out, -1)
    np.testing.assert_allclose(out, reference.ACTIVATIONS[activations.TANH](z), rtol=1e-15)
    with pytest.raises(KeyError):
        pieces.run("activation_no_such", np.float64)
