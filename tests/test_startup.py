"""Compile once per machine (kernels.build, kernels.pieces, Numba's own ``cache=True``): a new
configuration compiles only the pieces it has not used, a later process loads everything from
Numba's cache, a cold fit's helper process has ended when the fit returns, and ``python -m
fastgd compile`` / ``fastgd.compile(background=True)`` leave nothing for a later fit to compile.

Each test runs its fits in fresh processes with a cache folder of their own
(``NUMBA_CACHE_DIR``), bounded by a timeout."""

import json
import os
import subprocess
import sys

import pytest

TIMEOUT = 600

FIT = """
import json, os, sys
import numpy as np
import fastgd
from fastgd.kernels import build, phases, pieces, stages, train
rng = np.random.default_rng(0)
X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, size=40)
results = []
for activation, optimizer, dtype in json.loads(sys.argv[1]):
    before = len(pieces.LOG)
    net = fastgd.Network([5, 6, 3], activation=activation, loss="crossentropy", dtype=dtype, random_state=0)
    net.fit(X, y, optimizer=optimizer, epochs=3, batch_size=8)
    results.append({"pieces": [name for name, _, _ in pieces.LOG[before:]], "prediction": net.predict(X).tolist()})
functions = {tuple(str(part) for part in key): f for key, f in {**pieces._COMPILED, **phases._COMPILED, **stages._COMPILED}.items()}
helpers = []
if os.path.isdir("/proc"):  # Linux: any process still running the compile helper
    for pid in (pid for pid in os.listdir("/proc") if pid.isdigit() and int(pid) != os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if b"fastgd.kernels.build" in file.read():
                    helpers.append(pid)
        except OSError:
            pass
print(json.dumps({"results": results, "cache_hits": sorted(str(key) for key, f in functions.items() if f.cache_hits),
                  "compiled": sorted(str(key) for key, f in functions.items() if not f.cache_hits),
                  "loop": [sum(train.train_loop.stats.cache_hits.values()),
                           sum(train.train_loop.stats.cache_misses.values())],
                  "prepared": [label for label, _ in build.PREPARED], "helpers": helpers}))
"""


def run_fits(cache, settings, **env):
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(cache), FASTGD_COMPILE_HELPER="0")
    environment.pop("NUMBA_DISABLE_JIT", None)
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", FIT, json.dumps(settings)], capture_output=True, text=True, env=environment,
                          timeout=TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_new_configuration_compiles_only_the_pieces_it_has_not_used_and_a_later_process_nothing(tmp_path):
    settings = [["sigmoid", "adam", "float64"], ["tanh", "adam", "float64"], ["relu", "sgd", "float64"], ["relu", "sgd", "float64"]]
    found = run_fits(tmp_path, settings)
    first, tanh, relu_sgd, again = found["results"]
    assert "activation:sigmoid" in first["pieces"] and "pass:forward" in first["pieces"]
    # The loop, the passes, the loss and the products serve every configuration: the second
    # network (another activation) needed only its activation's piece, the third only its
    # activation's and its optimizer's, the fourth (a configuration seen before) nothing.
    assert tanh["pieces"] == ["activation:tanh"]
    assert sorted(relu_sgd["pieces"]) == ["activation:relu", "update:sgd"]
    assert again["pieces"] == []
    assert found["cache_hits"] == [] and found["loop"][1] == 1  # a cold cache: everything compiled once
    # A second process with the same cache loads every function from Numba's cache.
    later = run_fits(tmp_path, settings)
    assert later["compiled"] == [], later["compiled"]
    assert later["cache_hits"] == found["compiled"]
    assert later["loop"] == [1, 0]
    assert [result["prediction"] for result in later["results"]] == [result["prediction"] for result in found["results"]]


def test_a_helper_process_compiles_a_cold_fits_pieces_has_ended_and_the_results_are_the_same(tmp_path):
    setting = [["sigmoid", "adam", "float32"]]
    alone = run_fits(tmp_path / "alone", setting)
    helped = run_fits(tmp_path / "helped", setting, FASTGD_COMPILE_HELPER="1")
    # This process compiled the loop (and the two tiny stubs that probe the cache); the pieces,
    # passes and stages it then loaded were the helper's cache entries (the helper had ended:
    # none is running after the fit).
    assert helped["prepared"][0] == "loop:loop:float32", helped["prepared"]
    probes = {str(("python", "float32", "True")), str(("condition", "float32", "True"))}
    assert set(helped["compiled"]) <= probes, helped["compiled"]
    assert sorted(helped["cache_hits"] + helped["compiled"]) == alone["compiled"]
    assert helped["loop"][1] == 1
    if sys.platform.startswith("linux"):
        assert helped["helpers"] == []
    assert helped["results"][0]["prediction"] == alone["results"][0]["prediction"]


def test_python_m_fastgd_compile_leaves_nothing_for_a_fit_to_compile(tmp_path):
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    environment.pop("NUMBA_DISABLE_JIT", None)
    done = subprocess.run([sys.executable, "-m", "fastgd", "compile", "--dtype", "float64"], capture_output=True, text=True,
                          env=environment, timeout=TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loop" in done.stdout and "activation" in done.stdout
    found = run_fits(tmp_path, [["gelu", "adam", "float64"], ["silu", "rmsprop", "float64"]])
    assert found["compiled"] == [] and found["loop"] == [1, 0], found
    assert len(found["cache_hits"]) >= 8


def test_compile_in_the_background_is_asked_for_and_returns_the_process(tmp_path):
    code = (
        "import fastgd, json; process = fastgd.compile(['float32'], background=True); "
        "print(json.dumps([type(process).__name__, process.wait(timeout=%d)]))" % TIMEOUT
    )
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    environment.pop("NUMBA_DISABLE_JIT", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=TIMEOUT + 60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == ["Popen", 0]
    found = run_fits(tmp_path, [["relu", "sgd", "float32"]])
    assert found["compiled"] == [] and found["loop"] == [1, 0], found


@pytest.mark.parametrize(("dtypes", "background", "error"), [(["float16"], False, ValueError), ([], False, ValueError),
                                                             (["float32"], "yes", TypeError)])  # fmt: skip
def test_compile_rejects_bad_arguments(dtypes, background, error):
    import fastgd

    with pytest.raises(error, match="dtypes|background"):
        fastgd.compile(dtypes, background=background)
