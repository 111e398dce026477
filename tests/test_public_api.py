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
from numba import carray, njit

from fastgd.kernels import lowlevel, products

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.joinpath("kernels").glob("*.py"), *ROOT.joinpath("fastgd").rglob("*.py")])

# What fastgd takes from Numba, each with the page of Numba's documentation that shows it to
# users: the user guide ("Compiling Python code with @jit", "Creating C callbacks with @cfunc",
# "Supported Python features", "Deprecation notices"), the reference ("Just-in-Time compilation",
# "Types and signatures": first-class function objects and the Wrapper Address Protocol,
# "Environment variables") and "Extending Numba" (high- and low-level extension API: typeof_impl
# is the first example's "Typing of Python values"; "Calling Cython functions"; "A guide to
# using StructRef": numba.experimental.structref).
# (a table, one entry a line: the formatter would break its entries apart)
# fmt: off
DOCUMENTED_NUMBA = {
    "numba": {"njit", "cfunc", "carray", "types", "typeof", "literal_unroll", "config", "__version__", "from_dtype"},
    "numba.extending": {"intrinsic", "overload", "register_jitable", "get_cython_function_address", "typeof_impl"},
    "numba.experimental": {"structref"},
    # "Notes on the Event API" (numba.core.event, in Numba's module index): kernels.compile.CompileLog
    "numba.core": {"event"},
    "numba.core.errors": {"NumbaExperimentalFeatureWarning"},
}
# fmt: on

# Names that once reached into private internals (the issue that removed them lists them).
PRIVATE = re.compile(
    r"numba\.core\.caching|numba\.np\.linalg|numba\.misc|numba\._helperlib|numba\._dispatcher|\bcall_conv\b"
    r"|get_pointer_to_function|\.overloads\b|disable_compile|_real_set_num_threads|numpy\.libs|\bmake_array\b"
    r"|\bcgutils\b|targetctx|\bfndesc\b|_nrt\b"
    r"|no_cfunc_wrapper|no_cpython_wrapper|compute_fingerprint|\._cache\b|_index_path|_cache_path"
)


def code_lines(path):
    # Source lines without comments and docstrings (they may name what is no longer used).
    tree = ast.parse(path.read_text())
    docstrings = {
        node.body[0].value.lineno
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0]
        if text.strip() and number not in docstrings:
            yield number, text


def test_no_private_name_of_a_dependency_is_used():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in code_lines(path)
        if PRIVATE.search(line)
    ]
    assert not found, "\n".join(found)


def test_only_documented_numba_names_are_imported():
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("numba", "llvmlite"):
                if node.module.startswith("llvmlite"):
                    # llvmlite.ir (the "IR builder" reference) and llvmlite.binding (its "Target
                    # information" page: get_host_cpu_features) only
                    if node.module != "llvmlite" or any(alias.name not in ("ir", "binding") for alias in node.names):
                        found.append(f"{path.name}: from {node.module} import ...")
                    continue
                allowed = DOCUMENTED_NUMBA.get(node.module, set())
                found += [
                    f"{path.name}: from {node.module} import {alias.name}"
                    for alias in node.names
                    if alias.name not in allowed
                ]
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
    code = f"import sys, json; import fastgd; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
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


def _views(values, matrix, index, out):
    # unowned/unowned2: views without a reference count (writes go through); address and
    # as_array: elements by address; select: a branch-free choice.
    flat = lowlevel.unowned(values)
    square = lowlevel.unowned2(matrix)
    tail = lowlevel.as_array(lowlevel.address(values, index), 3, values)
    out[0], out[1], out[2] = flat[index], tail[2], square[1, 1]
    out[3] = lowlevel.select(index > 2, 1.5, -1.5)
    flat[0] = 42.0
    lowlevel.atomic_store(np.zeros(1, np.int64), 0, 3)
    return lowlevel.address(values, 1) - lowlevel.address(values, 0)


@pytest.mark.parametrize("compiled", [True, False])
def test_views_and_addresses(compiled):
    function = njit(_views) if compiled else _views
    values, matrix, out = np.arange(10.0), np.arange(6.0).reshape(3, 2), np.zeros(4)
    assert function(values, matrix, 3, out) == 8  # the address of element 1 is 8 bytes on
    np.testing.assert_array_equal(out, [3.0, 5.0, 3.0, 1.5])
    assert values[0] == 42.0  # the unowned view wrote into the array itself
    function(values, matrix, 1, out)
    assert out[3] == -1.5
    # as_array over nothing is empty, in Python as compiled code would never ask for it
    assert lowlevel.as_array(lowlevel.address(values, 0), 0, values).size == 0


@njit
def _sum_of_span(values, start, count):
    total = 0.0
    for i in lowlevel.span(start, count):  # range(start, start + count) over unsigned indices
        total += values[i]
    return total


def test_span_is_a_run_of_indices():
    # (compiled code only: an inlined helper returning a range, which Python cannot receive)
    assert _sum_of_span(np.arange(10.0), 3, 3) == 3.0 + 4.0 + 5.0
    assert _sum_of_span(np.arange(10.0), 9, 0) == 0.0


@njit
def _second_after(values, index):
    # pointer: a typed pointer into the flat storage, which numba.carray views (compiled)
    return carray(lowlevel.pointer(values, index), 2)[1]


def test_pointer():
    values = np.arange(10.0).reshape(2, 5)
    assert _second_after(values, 3) == 4.0
    np.testing.assert_array_equal(
        lowlevel.pointer(values, 3), [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    )  # Python: the flat tail


def test_select_on_arrays_is_numpy_where():
    # The NumPy twins run the element rules on whole arrays: select there is numpy.where.
    condition = np.array([True, False, True])
    np.testing.assert_array_equal(lowlevel.select(condition, np.ones(3), np.zeros(3)), [1.0, 0.0, 1.0])
    assert lowlevel.select(False, 2.0, 3.0) == 3.0


def _add3(first, second, third):
    return first + 2 * second + 3 * third


@njit
def _call_piece_compiled(address, first, second, third):
    return lowlevel.call_piece(address, first, second, third)


def test_a_piece_is_called_by_its_address():
    from fastgd.kernels import jit

    piece = jit.compile_piece(_add3)
    address = jit.piece_address(piece)
    assert _call_piece_compiled(address, 1, 2, 3) == 14
    # In Python (NUMBA_DISABLE_JIT): the piece registered under its stand-in address.
    lowlevel.PIECES[-1] = _add3
    try:
        assert lowlevel.call_piece(-1, 1, 2, 3) == 14
    finally:
        del lowlevel.PIECES[-1]


@njit
def _call_python_compiled(address, kind, argument):
    return lowlevel.call_python(address, kind, argument) + lowlevel.call_python(0, kind, argument)


def test_compiled_code_calls_python_through_a_callback():
    from fastgd.kernels.train import PythonCall

    calls = []

    def function(kind, argument):
        calls.append((kind, argument))
        if argument < 0:
            raise RuntimeError("raised inside the callback")
        return kind + argument

    call = PythonCall(function)
    assert _call_python_compiled(call.address, 2, 5) == 7  # (address 0 calls nothing: 0)
    assert lowlevel.call_python(call.address, 3, 4) == 7  # the Python twin, through CALLBACKS
    assert calls == [(2, 5), (3, 4)]
    # An exception cannot cross compiled code: the call answers ``failed``, the caller raises it.
    assert _call_python_compiled(call.address, 1, -1) == 1
    with pytest.raises(RuntimeError, match="inside the callback"):
        call.raise_error()


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


@njit
def _gemm(address, a, b, c, m, n, k):
    # Row-major C (m × n) = A (m × k) @ B (k × n) is column-major Cᵀ = Bᵀ Aᵀ.
    return products.call_gemm(
        address,
        products.NO_TRANSPOSE,
        products.NO_TRANSPOSE,
        n,
        m,
        k,
        lowlevel.pointer(b, 0),
        n,
        lowlevel.pointer(a, 0),
        k,
        lowlevel.pointer(c, 0),
        n,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blas_is_scipys_cython_blas_called_by_address(dtype):
    address = products.gemm_address(dtype)
    assert address > 0
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)).astype(dtype), rng.normal(size=(3, 4)).astype(dtype)
    c = np.zeros((5, 4), dtype)
    _gemm(address, a, b, c, 5, 4, 3)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5 if dtype == np.float32 else 1e-12)
    with pytest.raises(NotImplementedError):
        products.call_gemm(
            address, products.NO_TRANSPOSE, products.NO_TRANSPOSE, 4, 5, 3, b, 4, a, 3, c, 4
        )  # compiled code only


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
    net = fastgd.Network([4, 6, 5, 2], activation=activation, loss="crossentropy", dtype="float64", random_state=1,
                         n_threads=2)
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
        seen.append([frame.f_code.co_name, frame.f_locals["settings"].epochs])
    return None
sys.settrace(tracer)
net = fastgd.Network([2, 3, 1], random_state=0)
net.fit(np.eye(2), np.ones((2, 1)), epochs=2)
sys.settrace(None)
print(json.dumps(seen))
"""
    seen = _run_fit({"NUMBA_DISABLE_JIT": "1"}, code)
    # The two epochs run in one call of the plain-Python loop; train_epochs's first call in a
    # process (which would compile or load the loop) runs it too, for zero epochs.
    assert [epochs for name, epochs in seen if epochs > 0] == [2] and {name for name, _ in seen} == {"train_loop"}, seen


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
