"""fastgd stands on what its dependencies document: no private name of Numba, llvmlite,
threadpoolctl or NumPy's wheel in its code, Numba without an upper pin, and the low-level
operations (kernels.lowlevel) written with Numba's documented extension API, each checked here
compiled and as its plain-Python twin."""

import ast
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
# "Environment variables") and "Extending Numba" (high- and low-level extension API, "Calling
# Cython functions").
DOCUMENTED_NUMBA = {
    "numba": {"njit", "cfunc", "carray", "types", "typeof", "literal_unroll", "config", "__version__", "from_dtype"},
    "numba.extending": {"intrinsic", "overload", "register_jitable", "get_cython_function_address"},
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


def _pointers(values, index, out):
    data = lowlevel.pointer(values, index)
    view = lowlevel.view(data, 2)
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
