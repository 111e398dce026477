"""fastgd stands on what its dependencies document: no private name of Numba, llvmlite,
threadpoolctl or NumPy's wheel in its code, Numba without an upper pin, and the low-level
operations (kernels.lowlevel) written with Numba's documented extension API, each checked here
compiled and as its plain-Python twin."""

import ast
import json
import os
import pathlib
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from numba import njit

from fastgd.kernels import lowlevel

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.joinpath("kernels").glob("*.py"), *ROOT.joinpath("fastgd").rglob("*.py")])

# What fastgd takes from Numba, each with the page of Numba's documentation that shows it to
# users: the user guide ("Compiling Python code with @jit", "Creating C callbacks with @cfunc",
# "Supported Python features", "Deprecation notices"), the reference ("Just-in-Time compilation",
# "Types and signatures": first-class function objects and the Wrapper Address Protocol,
# "Environment variables") and "Extending Numba" (high- and low-level extension API: typeof_impl
# is the first example's "Typing of Python values"; "Calling Cython functions"; "A guide to
# using StructRef": numba.experimental.structref).
DOCUMENTED_NUMBA = {
    "numba": {"njit", "cfunc", "carray", "types", "typeof", "literal_unroll", "config", "__version__", "from_dtype"},
    "numba.extending": {"intrinsic", "overload", "register_jitable", "get_cython_function_address", "typeof_impl"},
    "numba.experimental": {"structref"},
    "numba.core.errors": {"NumbaExperimentalFeatureWarning"},
}  # fmt: skip

# Names that once reached into private internals (the issue that removed them lists them).
PRIVATE = re.compile(
    r"numba\.core\.caching|numba\.np\.linalg|numba\.misc|numba\._helperlib|numba\._dispatcher|\bcall_conv\b|get_pointer_to_function"
    r"|\.overloads\b|disable_compile|_real_set_num_threads|numpy\.libs|\bmake_array\b|\bcgutils\b|targetctx|\bfndesc\b|_nrt\b"
    r"|no_cfunc_wrapper|no_cpython_wrapper|compute_fingerprint|\._cache\b|_index_path|_cache_path"
)


def code_lines(path):
    # Source lines without comments and docstrings (they may name what is no longer used).
    tree = ast.parse(path.read_text())
    docstrings = {node.body[0].value.lineno for node in ast.walk(tree) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}  # fmt: skip
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0]
        if text.strip() and number not in docstrings:
            yield number, text


def test_no_private_name_of_a_dependency_is_used():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in SOURCES for number, line in code_lines(path) if PRIVATE.search(line)]
    assert not found, "\n".join(found)


def test_only_documented_numba_names_are_imported():
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("numba", "llvmlite"):
                if node.module.startswith("llvmlite"):
                    if node.module != "llvmlite" or any(alias.name != "ir" for alias in node.names):  # llvmlite.ir only
                        found.append(f"{path.name}: from {node.module} import ...")
                    continue
                allowed = DOCUMENTED_NUMBA.get(node.module, set())
                found += [f"{path.name}: from {node.module} import {alias.name}" for alias in node.names if alias.name not in allowed]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "numba":
                if node.attr not in DOCUMENTED_NUMBA["numba"]:
                    found.append(f"{path.name}: numba.{node.attr}")
    assert not found, "\n".join(sorted(set(found)))


def test_numba_has_a_floor_and_no_upper_bound():
    text = (ROOT / "pyproject.toml").read_text()
    (requirement,) = re.findall(r'"(numba[^"]*)"', text.split("[project.optional-dependencies]")[0])
    assert requirement.startswith("numba>=") and "<" not in requirement, requirement


def test_importing_fastgd_changes_no_numba_setting():
    code = (
        "import json; import numba; before = {k: getattr(numba.config, k) for k in dir(numba.config) if k.isupper()}; "
        "import fastgd; after = {k: getattr(numba.config, k) for k in dir(numba.config) if k.isupper()}; "
        "print(json.dumps(sorted(k for k in before if before[k] != after.get(k))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert __import__("json").loads(done.stdout.strip().splitlines()[-1]) == []


def test_importing_fastgd_imports_nothing_heavy():
    # Numba itself imports SciPy when it is installed, so Numba is on the list too: a bare
    # ``import fastgd`` must import neither until something compiled is used.
    heavy = ("numba", "scipy", "threadpoolctl", "sklearn", "fastgd.sklearn", "fastgd.kernels.train")
    code = (
        "import sys, json; import fastgd; "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert __import__("json").loads(done.stdout.strip().splitlines()[-1]) == []


# --------------------------------------------------------------------------- lowlevel, both ways
def _atomics(array, n):
    for _ in range(n):
        lowlevel.atomic_add(array, 0, 1)
        lowlevel.spin_pause()
    return lowlevel.atomic_load(array, 0)


_atomics_compiled = njit(nogil=True)(_atomics)


def test_atomics_and_pause_work_across_threads():
    # Two threads add 10 000 each through atomic_add (compiled, the GIL released): none is lost.
    counter = np.zeros(8, np.int64)
    _atomics_compiled(counter, 1)
    counter[0] = 0
    workers = [threading.Thread(target=_atomics_compiled, args=(counter, 10_000)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert counter[0] == 20_000
    assert _atomics(np.zeros(1, np.int64), 5) == 5  # the Python twin


# (By its own name: Numba refuses ``something.view(...)`` on anything but a NumPy array or
# dtype, so compiled code calls ``view`` imported, as the kernels do.)
view_of = lowlevel.view


def _pointers(values, index, out):
    data = lowlevel.pointer(values, index)
    view = view_of(data, 2)
    square = lowlevel.view2(lowlevel.advance(data, 1), 2, 2)
    out[0], out[1], out[2] = view[0], view[1], square[1, 1]
    lowlevel.atomic_store(np.zeros(1, np.int64), 0, 3)
    return lowlevel.element_size(data)


@pytest.mark.parametrize("compiled", [True, False])
def test_pointers_and_views(compiled):
    function = njit(_pointers) if compiled else _pointers
    values, out = np.arange(10.0), np.zeros(3)
    assert function(values, 3, out) == 8
    np.testing.assert_array_equal(out, [3.0, 4.0, 7.0])  # view2 from element 4: [[4, 5], [6, 7]]


def _bits(bits32, bits64, value):
    return lowlevel.float32_from_bits(bits32), lowlevel.float64_from_bits(bits64), lowlevel.float64_bits(value)


@pytest.mark.parametrize("compiled", [True, False])
def test_bit_casts(compiled):
    function = njit(_bits) if compiled else _bits
    one32, one64, bits = function(np.int32(0x3F800000), np.int64(0x3FF0000000000000), 2.5)
    assert one32 == 1.0 and one64 == 1.0 and bits == np.array(2.5).view(np.int64)


def _clock(kind, address, parameter, scratch):
    return lowlevel.monotonic_ns(kind, address, parameter, scratch)


def test_the_clock_compiled_code_reads_advances_with_pythons():
    import time

    kind, address, parameter = lowlevel.clock_source()
    assert kind != lowlevel.CLOCK_NONE  # every platform fastgd is tested on has one
    compiled = njit(_clock)
    before = time.monotonic_ns()
    reading = compiled(kind, address, parameter, np.zeros(2, np.int64))
    after = time.monotonic_ns()
    assert before <= reading <= after  # the same clock as Python's time.monotonic_ns


def test_a_yield_address_is_found_and_called():
    address = lowlevel.yield_address()
    assert address != 0

    @njit
    def call(address):
        lowlevel.call_void(address)
        lowlevel.call_void(0)  # nothing to call: nothing done
        return 1

    assert call(address) == 1


def test_blas_is_scipys_cython_blas():
    from fastgd.kernels import blas

    for dtype in (np.float32, np.float64):
        assert blas.gemm_address(dtype) > 0


# --------------------------------------------------------------------------- stamps
def test_every_kernel_stamp_is_current():
    from fastgd.kernels import stamps

    assert stamps.stale() == [], "run `python -m fastgd.kernels.stamps`"


# --------------------------------------------------------------------------- debuggable
DEBUG_FIT = """
import json, sys
import numpy as np
import fastgd
from fastgd.kernels import config
rng = np.random.default_rng(0)
X = rng.normal(size=(96, 4)); y = (X[:, 0] * X[:, 1] > 0).astype(int)
X_val = rng.normal(size=(32, 4)); y_val = (X_val[:, 0] * X_val[:, 1] > 0).astype(int)
results = {"disabled": config.DISABLE_JIT}
for activation in ("tanh", "gelu"):
    net = fastgd.Network([4, 6, 5, 2], activation=activation, loss="crossentropy", dtype="float64", random_state=1, n_threads=2)
    history = net.fit(X, y, optimizer=fastgd.Adam(lr=0.05), epochs=12, batch_size=16, validation_data=(X_val, y_val),
                      early_stopping=fastgd.callbacks.EarlyStopping(patience=2, monitor="val_loss"))
    results[activation] = {"params": net.flat_parameters.tolist(), "loss": history.loss, "val_loss": history.val_loss,
                           "epochs": net.epochs_trained, "prediction": net.predict(X_val).tolist()}
print(json.dumps(results))
"""


def _run_fit(extra_env, code=DEBUG_FIT):
    environment = dict(os.environ, **extra_env)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_fit_under_numba_disable_jit_is_plain_python_and_gives_the_compiled_result():
    compiled = _run_fit({"NUMBA_DISABLE_JIT": "0"})
    python = _run_fit({"NUMBA_DISABLE_JIT": "1"})
    assert python["disabled"] and not compiled["disabled"]
    for activation in ("tanh", "gelu"):
        ours, theirs = python[activation], compiled[activation]
        assert ours["epochs"] == theirs["epochs"] and len(ours["val_loss"]) == len(theirs["val_loss"])
        # float64, the kernels' tolerance against their NumPy twins (fast-math may reorder sums
        # in compiled code; plain Python runs the same code in source order).
        np.testing.assert_allclose(ours["params"], theirs["params"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours["loss"], theirs["loss"], rtol=1e-12)
        np.testing.assert_allclose(ours["val_loss"], theirs["val_loss"], rtol=1e-12)
        np.testing.assert_allclose(ours["prediction"], theirs["prediction"], rtol=1e-12, atol=1e-14)


def test_a_fit_under_numba_disable_jit_runs_the_python_loop_a_debugger_can_step_into():
    code = """
import sys, json, numpy as np, fastgd
from fastgd.kernels import train
seen = []
def tracer(frame, event, arg):
    if event == "call" and frame.f_code is train.train_loop.__code__:
        seen.append(frame.f_code.co_name)
    return None
sys.settrace(tracer)
net = fastgd.Network([2, 3, 1], random_state=0)
net.fit(np.eye(2), np.ones((2, 1)), epochs=2)
sys.settrace(None)
print(json.dumps(seen))
"""
    assert _run_fit({"NUMBA_DISABLE_JIT": "1"}, code) == ["train_loop"]


# --------------------------------------------------------------------------- any operating system
WINDOWS_LIKE = """
import os
# fastgd's dependencies first (each handles its platforms itself: NumPy reads os.uname on
# Linux only), then what Windows lacks is removed before fastgd is imported.
import numpy, numba, scipy.linalg, threadpoolctl
for name in ("uname", "register_at_fork", "sched_getaffinity", "sched_setaffinity", "fork", "getloadavg"):
    if hasattr(os, name):
        delattr(os, name)
import json
import numpy as np
import fastgd
rng = np.random.default_rng(0)
X, y = rng.normal(size=(64, 3)), rng.integers(0, 2, size=64)
net = fastgd.Network([3, 5, 2], activation="relu", loss="crossentropy", random_state=0, n_threads=2)
history = net.fit(X, y, epochs=3, batch_size=16)
import fastgd.diagnostics
print(json.dumps({"loss": history.loss, "prediction": net.predict(X).tolist(), "missing": [hasattr(os, "uname")]}))
"""


def test_import_and_training_work_without_the_posix_only_calls():
    found = _run_fit({}, WINDOWS_LIKE)
    assert found["missing"] == [False]
    assert len(found["loss"]) == 3 and np.all(np.isfinite(found["loss"]))
    reference = _run_fit({}, WINDOWS_LIKE.replace("delattr(os, name)", "pass"))
    assert found["prediction"] == reference["prediction"]
