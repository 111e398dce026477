"""Compile once per machine (kernels.compile, Numba's own ``cache=True``): nothing is compiled
per network configuration (per dtype, the training loop and the entry point of the passes, and
the two passes as C functions, each serving every activation, loss and optimizer), a later
process loads everything from Numba's cache, a cold fit's helper process has ended when the fit
returns, and ``python -m fastgd compile`` / ``fastgd.compile(background=True)`` leave nothing
for a later fit to compile.

Each test runs its fits in fresh processes with a cache folder of their own
(``NUMBA_CACHE_DIR``), bounded by a timeout."""

import json
import os
import re
import subprocess
import sys

import pytest

TIMEOUT = 600

# Each setting: (activation, loss, optimizer, dtype). What Numba compiled during each fit and
# prediction (kernels.compile.CompileLog: every function Numba compiled, by name), and how each
# compiled entry point and pass was had: from the cache, or compiled here.
FIT = """
import json, os, sys
import numpy as np
import fastgd
from fastgd.kernels import compile as compile_module, network, passes, train
rng = np.random.default_rng(0)
X, labels = rng.normal(size=(40, 5)), rng.integers(0, 3, size=40)
results = []
for activation, loss, optimizer, dtype in json.loads(sys.argv[1]):
    y = labels if loss == "crossentropy" else np.eye(3)[labels]
    with compile_module.CompileLog() as log:
        net = fastgd.Network([5, 6, 3], activation=activation, loss=loss, dtype=dtype, random_state=0)
        net.fit(X, y, optimizer=optimizer, epochs=3, batch_size=8)
        prediction = net.predict(X).tolist()
    results.append({"compiled": sorted(log.functions), "prediction": prediction})
entries = {"train_loop": train.train_loop, "run_passes": network.run_passes}
hits = {name: sum(f.stats.cache_hits.values()) for name, f in entries.items()}
misses = {name: sum(f.stats.cache_misses.values()) for name, f in entries.items()}
pieces = {f"{kind}:{dtype}": bool(f.cache_hits) for (kind, dtype), f in passes._COMPILED.items()}
helpers = []
if os.path.isdir("/proc"):  # Linux: any process still running the compile helper
    for pid in (pid for pid in os.listdir("/proc") if pid.isdigit() and int(pid) != os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if b"fastgd.kernels.compile" in file.read():
                    helpers.append(pid)
        except OSError:
            pass
print(json.dumps({"results": results, "hits": hits, "misses": misses, "pieces": pieces,
                  "signatures": [len(train.train_loop.signatures), len(network.run_passes.signatures)],
                  "helpers": helpers}))
"""


def run_fits(cache, settings, **env):
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(cache), FASTGD_COMPILE_HELPER="0")
    environment.pop("NUMBA_DISABLE_JIT", None)
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-c", FIT, json.dumps(settings)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_new_configuration_compiles_nothing_and_a_later_process_loads_everything(tmp_path):
    settings = [
        ["sigmoid", "crossentropy", "adam", "float64"],
        ["tanh", "crossentropy", "adam", "float64"],
        ["gelu", "mse", "sgd", "float64"],
        ["relu", "huber", "nadam", "float64"],
        ["gelu", "mse", "sgd", "float64"],
    ]
    found = run_fits(tmp_path, settings)
    first, *others = found["results"]
    # A cold cache: the first fit compiled the loop and the passes' entry point (and everything
    # they call); the activations, losses and optimizers are branches chosen at run time, so a
    # network with another activation, loss or optimizer compiles nothing new.
    assert "train_loop" in first["compiled"] and "run_passes" in first["compiled"], first["compiled"]
    assert {"apply", "loss_rows", "update"} <= set(first["compiled"]), first["compiled"]
    for setting, result in zip(settings[1:], others):
        assert result["compiled"] == [], (setting, result["compiled"])
    assert found["signatures"] == [1, 1]  # one compiled loop and one entry point served every network
    assert found["misses"] == {"train_loop": 1, "run_passes": 1} and found["hits"] == {"train_loop": 0, "run_passes": 0}
    assert found["pieces"] == {"forward:float64": False, "backward:float64": False}  # compiled, once each
    # A second process with the same cache loads every function from Numba's cache.
    later = run_fits(tmp_path, settings)
    assert all(result["compiled"] == [] for result in later["results"]), later["results"]
    assert later["hits"] == {"train_loop": 1, "run_passes": 1} and later["misses"] == {"train_loop": 0, "run_passes": 0}
    assert later["pieces"] == {"forward:float64": True, "backward:float64": True}
    assert [result["prediction"] for result in later["results"]] == [
        result["prediction"] for result in found["results"]
    ]


def test_a_helper_process_compiles_a_cold_fits_passes_has_ended_and_the_results_are_the_same(tmp_path):
    setting = [["sigmoid", "crossentropy", "adam", "float32"]]
    alone = run_fits(tmp_path / "alone", setting)
    helped = run_fits(tmp_path / "helped", setting, FASTGD_COMPILE_HELPER="1")
    # Alone, this process compiled the loop and the passes; helped, it compiled the loop while
    # the helper compiled the passes into the cache, and then loaded them from there (the
    # helper had ended: none is running after the fit).
    assert alone["pieces"] == {"forward:float32": False, "backward:float32": False}
    assert helped["pieces"] == {"forward:float32": True, "backward:float32": True}
    assert helped["misses"]["train_loop"] == 1 and "train_loop" in helped["results"][0]["compiled"]
    if sys.platform.startswith("linux"):
        assert helped["helpers"] == []
    assert helped["results"][0]["prediction"] == alone["results"][0]["prediction"]


def test_python_m_fastgd_compile_leaves_nothing_for_a_fit_to_compile(tmp_path):
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    environment.pop("NUMBA_DISABLE_JIT", None)
    done = subprocess.run(
        [sys.executable, "-m", "fastgd", "compile", "--dtype", "float64"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("train_loop", "run_passes", "forward", "backward"):  # a line per compiled function
        assert re.search(rf"float64\s+{name}\s", done.stdout), done.stdout
    found = run_fits(tmp_path, [["gelu", "crossentropy", "adam", "float64"], ["silu", "poisson", "rmsprop", "float64"]])
    assert all(result["compiled"] == [] for result in found["results"]), found
    assert found["hits"] == {"train_loop": 1, "run_passes": 1} and found["misses"] == {
        "train_loop": 0,
        "run_passes": 0,
    }, found
    assert found["pieces"] == {"forward:float64": True, "backward:float64": True}, found


def test_compile_in_the_background_is_asked_for_and_returns_the_process(tmp_path):
    code = (
        "import fastgd, json; process = fastgd.compile(['float32'], background=True); "
        "print(json.dumps([type(process).__name__, process.wait(timeout=%d)]))" % TIMEOUT
    )
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    environment.pop("NUMBA_DISABLE_JIT", None)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=TIMEOUT + 60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == ["Popen", 0]
    found = run_fits(tmp_path, [["relu", "crossentropy", "sgd", "float32"]])
    assert all(result["compiled"] == [] for result in found["results"]), found
    assert found["hits"] == {"train_loop": 1, "run_passes": 1} and found["pieces"] == {
        "forward:float32": True,
        "backward:float32": True,
    }


@pytest.mark.parametrize(
    ("dtypes", "background", "error"),
    [(["float16"], False, ValueError), ([], False, ValueError), (["float32"], "yes", TypeError)],
)
def test_compile_rejects_bad_arguments(dtypes, background, error):
    import fastgd

    with pytest.raises(error, match="dtypes|background"):
        fastgd.compile(dtypes, background=background)
