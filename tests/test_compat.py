"""Every private Numba, llvmlite and threadpoolctl name fastgd uses (kernels/compat.py) still
exists and still behaves as fastgd relies on: an upgrade that changes one fails here, loudly,
rather than in a user's fit."""

import importlib
import subprocess
import sys
import threading
import warnings

import numba
import numpy as np
import pytest
from numba import njit

from fastgd.kernels import compat, layout


def test_numba_version_is_one_the_private_names_were_checked_against():
    assert compat.NUMBA_TESTED, (
        f"Numba {numba.__version__} is outside {compat.TESTED_NUMBA}: check every name in kernels/compat.py against it, "
        "then move TESTED_NUMBA"
    )


@pytest.mark.parametrize("module, names", list(compat.PRIVATE_NAMES.items()))
def test_private_names_exist(module, names):
    assert compat.missing_private_names({module: names}) == []


def test_the_lookup_finds_what_is_missing():
    assert compat.missing_private_names({"numba.core.caching": ("FunctionCache", "NoSuchThing")}) == ["numba.core.caching.NoSuchThing"]
    assert compat.missing_private_names({"numba.core.caching.NoSuchClass": ("x",)}) == ["numba.core.caching.NoSuchClass"]
    assert compat.missing_private_names({"no_such_module_anywhere": ("x",)}) == ["no_such_module_anywhere"]


def test_a_numba_outside_the_checked_range_is_checked_at_import():
    # Inside the range: nothing is looked up, nothing said.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat.check_private_names(version=compat.TESTED_NUMBA[1])
    # Outside it with every name present: a warning that says so and what to do.
    with pytest.warns(compat.UntestedNumbaWarning, match=r"Numba 0\.69 is installed.*pip install 'numba>=0\.59,<0\.69'"):
        compat.check_private_names(version=(0, 69))
    # Outside it with a name gone: an ImportError naming it, the version and the supported range.
    names = dict(compat.PRIVATE_NAMES, **{"numba.core.caching": ("FunctionCache", "RenamedAway")})
    with pytest.raises(ImportError, match=r"supports Numba 0\.59 to 0\.68; Numba 1\.0 is installed and lacks "
                                          r"numba\.core\.caching\.RenamedAway"):
        compat.check_private_names(version=(1, 0), names=names)


@pytest.mark.parametrize("case", ["untested", "missing"])
def test_importing_fastgd_with_an_unchecked_numba(case):
    # The same through a real import, in a fresh process: a Numba that says it is 0.69, with
    # every name or with one of them removed.
    remove = "import numba.core.caching as c; del c.IndexDataCacheFile; " if case == "missing" else ""
    code = (f"import warnings, numba; {remove}numba.__version__ = '0.69.0'; warnings.simplefilter('error'); import fastgd")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    if case == "missing":
        assert "ImportError: fastgd supports Numba 0.59 to 0.68; Numba 0.69 is installed and lacks " in done.stderr
        assert "numba.core.caching.IndexDataCacheFile" in done.stderr
    else:
        assert "UntestedNumbaWarning" in done.stderr and "Numba 0.69 is installed" in done.stderr


def test_cache_locators_and_index_file_have_the_attributes_the_guard_uses():
    from numba.core import caching

    cache = compat.GuardedCache(_probe.py_func)
    assert isinstance(cache._cache_file, caching.IndexDataCacheFile)
    for attribute in ("_index_path", "_data_name_pattern", "_source_stamp"):
        assert hasattr(cache._cache_file, attribute), attribute
    assert "{number:d}" in cache._cache_file._data_name_pattern


def test_a_kernels_cache_stamp_covers_the_modules_it_is_built_from_and_no_others():
    from fastgd.kernels import passes, train

    locator = passes.forward_pass._cache._impl.locator
    assert locator.get_source_stamp() == compat.module_stamp(passes.__file__)
    assert locator.get_disambiguator() == "fastgd"  # no line number: an edit above it keeps the entry
    built_from = compat._module_dependencies("passes")
    # passes calls its pieces by address: their modules are not part of its code (an edit there
    # leaves the compiled passes cached), the ones it imports are.
    assert {"passes", "products", "team", "layout", "compat", "config", "microkernel"} <= built_from
    assert not built_from & {"train", "optim", "losses", "activations", "pieces"}
    assert compat.module_stamp(passes.__file__) != compat.module_stamp(train.__file__)


@njit
def _probe(x):
    return x + 1


def test_atomics_and_pause_work_across_threads():
    # Two threads add 10 000 each through atomic_add; an atomic load sees a store from another
    # thread; the pause hint compiles.
    @njit(nogil=True)
    def add(array, n):
        for _ in range(n):
            compat.atomic_add(array, 0, 1)
            compat.spin_pause()
        return compat.atomic_load(array, 0)

    counter = np.zeros(8, np.int64)
    add(counter, 1)
    counter[0] = 0
    workers = [threading.Thread(target=add, args=(counter, 10_000)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert counter[0] == 20_000


def test_unsigned_index_and_address_of():
    @njit
    def read(values, index):
        # The value at an unsigned index, and the one the pointer to values[index] points at.
        return values[compat.unsigned(index)], numba.carray(compat.address_of(values, index), 1)[0]

    values = np.arange(5.0)
    assert read(values, 3) == (3.0, 3.0)


def test_remembered_types_are_numbas_for_every_kind_of_value():
    # compat.typeof remembers numba.typeof by Numba's fingerprint: every difference numba.typeof
    # sees (dtype, dimensions, layout, writability, scalar kind, tuple class) must give another
    # type, and each must be exactly numba.typeof's.
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    Other = namedtuple("Other", "a b")
    readonly = np.zeros(4)
    readonly.setflags(write=False)
    values = [np.zeros(4), np.zeros(4, np.float32), np.zeros((2, 2)), np.zeros((4, 4))[:, :2], np.zeros((4, 4)).T, readonly,
              np.zeros(4, np.int64), 1, 1.0, True, np.float32(1), np.int64(1), (np.zeros(2), 1.0), Pair(np.zeros(2), 1),
              Other(np.zeros(2), 1), Pair(np.zeros(2, np.float32), 1), Pair(readonly, 1)]  # fmt: skip
    for _ in range(2):  # the second time from what was remembered
        for value in values:
            assert compat.typeof(value) == numba.typeof(value), value
    # (1 and np.int64(1) are both int64 to Numba: every other value here has a type of its own)
    assert len({str(compat.typeof(value)) for value in values}) == len(values) - 1
    assert compat.typeof("text") == numba.typeof("text")  # no fingerprint: numba.typeof itself


def test_a_piece_is_called_by_address_and_its_errors_propagate():
    from numba import types

    @njit
    def piece(values, stop):
        if stop > values.size:
            raise IndexError("stop past the end")
        total = 0.0
        for i in range(stop):
            total += values[i]
        return total

    address = compat.piece_address(piece, (types.float64[::1], types.int64))
    assert address != 0

    @njit
    def call(address, values, stop):
        return compat.call_piece(0.0, address, (values, stop))

    assert call(address, np.arange(4.0), 4) == 6.0
    with pytest.raises(IndexError, match="past the end"):
        call(address, np.arange(4.0), 9)


def test_cblas_gemm_addresses_and_blas_kind():
    single, double, ilp64 = compat.cblas_gemm_addresses()
    assert (single == 0) == (double == 0)
    assert ilp64 in (0, 1)
    function, kind = compat.blas_gemm(numba.float32)
    assert kind == ord("s")


def test_threadpoolctl_setter_is_reachable():
    from fastgd._threads import _blas

    controllers = _blas().lib_controllers
    assert controllers, "no BLAS found by threadpoolctl"
    for library in controllers:
        assert callable(getattr(library, "_real_set_num_threads", None) or library.set_num_threads)
        before = library.get_num_threads()
        compat.set_library_threads(library, 1)
        assert library.get_num_threads() == 1
        compat.set_library_threads(library, before)
        assert library.get_num_threads() == before


def test_importing_fastgd_changes_no_numba_setting():
    import subprocess
    import sys

    code = (
        "import numba, json; before = {k: getattr(numba.config, k) for k in dir(numba.config) if k.isupper()}; "
        "import fastgd; after = {k: getattr(numba.config, k) for k in dir(numba.config) if k.isupper()}; "
        "print(json.dumps(sorted(k for k in before if before[k] != after.get(k))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert layout.CONTROL_WIDTH >= 8
