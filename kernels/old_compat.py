"""Every use of a private Numba, llvmlite or threadpoolctl name, in one place.

fastgd needs a few things those libraries do not offer publicly: a compile cache it can trust,
direct BLAS ``gemm`` calls on sub-blocks of arrays, atomic memory operations for its threads,
and setting OpenBLAS's threads from any Python thread. Each is reached here, checked against
the versions it was written for, and covered by ``tests/test_compat.py``, which fails loudly
when an upgrade changes one of them. Nothing here changes Numba's or the process's settings:
the cache is attached to fastgd's own kernels one by one.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import tempfile
import time
import types as pytypes
import warnings

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from . import config

# Versions these private names were checked against (tests/test_compat.py checks each name, and
# fails on a Numba outside this range until the names are checked again and the range moved).
# pyproject.toml keeps installs inside it (numba<0.69); on a Numba outside it anyway, importing
# fastgd checks every name below first (``check_private_names``).
TESTED_NUMBA = ((0, 59), (0, 68))
SUPPORTED = "numba>=0.59,<0.69"
NUMBA_VERSION = tuple(int(part) for part in re.findall(r"\d+", numba.__version__)[:2])
NUMBA_TESTED = TESTED_NUMBA[0] <= NUMBA_VERSION <= TESTED_NUMBA[1]

# Every private name fastgd reaches, as "module": names, or "module.Class": attributes of the
# class; instance attributes (the cache file's index path) are exercised by tests/test_compat.py.
PRIVATE_NAMES = {
    "numba.core.cgutils": ("get_item_pointer", "get_or_insert_function", "if_unlikely"),
    "numba.core.caching": ("FunctionCache", "CompileResultCacheImpl", "UserProvidedCacheLocator",
                           "InTreeCacheLocator", "UserWideCacheLocator", "IndexDataCacheFile", "_SourceFileBackedLocatorMixin"),
    "numba.core.caching.FunctionCache": ("_index_key", "load_overload", "save_overload"),
    "numba.core.caching.IndexDataCacheFile": ("_load_index",),
    "numba.core.cpu.CPUTargetOptions": ("_nrt", "no_cfunc_wrapper", "no_cpython_wrapper", "error_model", "fastmath"),
    "numba.np.linalg": ("_BLAS", "ensure_blas", "get_blas_kind"),
    "numba.misc.appdirs": ("AppDirs",),
    "numba._helperlib": ("__file__",),
    "numba._dispatcher": ("compute_fingerprint",),
    "threadpoolctl": ("LibController", "ThreadpoolController"),
}  # fmt: skip


class UntestedNumbaWarning(UserWarning):
    """Numba is outside the versions fastgd was checked against, but has every name it uses."""


def missing_private_names(names=None) -> list:
    """The entries of ``names`` (default ``PRIVATE_NAMES``) that cannot be found, as dotted
    paths: nothing is imported beyond the modules named."""
    import importlib

    missing = []
    for path, attributes in (PRIVATE_NAMES if names is None else names).items():
        parts, owner = path.split("."), None
        for split in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                owner = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            try:
                for attribute in parts[split:]:
                    owner = getattr(owner, attribute)
            except AttributeError:
                owner = None
            break
        if owner is None:
            missing.append(path)
            continue
        missing.extend(f"{path}.{name}" for name in attributes if not hasattr(owner, name))
    return missing


def check_private_names(version=None, names=None) -> None:
    """Refuse, at import, a Numba fastgd cannot work with: on a version outside ``TESTED_NUMBA``
    every private name is looked up first; any missing one is an ImportError naming it, the
    installed version and the supported range; with all present, an ``UntestedNumbaWarning``
    (their behaviour has not been checked: fastgd's test suite checks it). Inside the range
    nothing is looked up (the test suite checked these names for it)."""
    version = NUMBA_VERSION if version is None else tuple(version)
    if TESTED_NUMBA[0] <= version <= TESTED_NUMBA[1]:
        return
    found = ".".join(map(str, version))
    missing = missing_private_names(names)
    if missing:
        raise ImportError(
            f"fastgd supports Numba {TESTED_NUMBA[0][0]}.{TESTED_NUMBA[0][1]} to {TESTED_NUMBA[1][0]}.{TESTED_NUMBA[1][1]}; "
            f"Numba {found} is installed and lacks {', '.join(missing)}, which fastgd's compiled kernels need. "
            f"Install a supported release: pip install '{SUPPORTED}'"
        )
    warnings.warn(
        f"fastgd was checked against Numba {TESTED_NUMBA[0][0]}.{TESTED_NUMBA[0][1]} to {TESTED_NUMBA[1][0]}.{TESTED_NUMBA[1][1]}; "
        f"Numba {found} is installed. Every private name fastgd uses is present, but their behaviour is unchecked: run "
        f"fastgd's tests (pytest tests/test_compat.py) before trusting results, or pip install '{SUPPORTED}'",
        UntestedNumbaWarning,
        stacklevel=2,
    )


check_private_names()

# --------------------------------------------------------------------------- private imports
from numba.core import cgutils  # noqa: E402  (get_item_pointer, get_or_insert_function)
from numba import _dispatcher  # noqa: E402  (compute_fingerprint)
from numba.core import caching as _caching  # noqa: E402
from numba.misc.appdirs import AppDirs  # noqa: E402
from numba.np.linalg import _BLAS, ensure_blas, get_blas_kind  # noqa: E402


# --------------------------------------------------------------------------- compile cache
_PACKAGE_FOLDER = os.path.dirname(os.path.abspath(__file__))
# ``from .module import ...`` and ``from . import module, ...`` at the top of a module: what its
# compiled code can be built from (Numba compiles a module's globals in; an import inside a
# Python function is Python's business).
_IMPORTS = re.compile(r"^from \.(\w*) import (?:\(([^)]*)\)|([\w, \t]+)$)", re.M)


def _module_dependencies(name: str) -> set:
    """The kernel modules ``name`` imports, directly or through the modules it imports."""
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = os.path.join(_PACKAGE_FOLDER, module + ".py")
        if not os.path.exists(path):
            continue
        seen.add(module)
        with open(path, encoding="utf-8") as file:
            text = file.read()
        for source, listed, names in _IMPORTS.findall(text):
            names = (listed or names).replace("\n", ",")
            todo.extend([source] if source else [part.split(" as ")[0].strip() for part in names.split(",") if part.strip()])
    return seen


_STAMPS = {}


def module_stamp(path: str) -> str:
    """The freshness stamp of cached code compiled from the kernel module at ``path``: a hash of
    its source and of every kernel module it imports (directly or not), and of the
    code-generation settings. Code compiled from one module is thrown away when that module or
    one it builds on changes, and only then (an edit elsewhere leaves it cached)."""
    name = os.path.splitext(os.path.basename(path))[0]
    if name not in _STAMPS:
        digest = hashlib.sha256()
        for module in sorted(_module_dependencies(name)):
            digest.update(module.encode())
            with open(os.path.join(_PACKAGE_FOLDER, module + ".py"), "rb") as file:
                digest.update(file.read())
        # Settings that change the machine code but not Numba's own cache key: a
        # NUMBA_BOUNDSCHECK=1 run must not load unchecked code.
        settings = f"boundscheck={numba.config.BOUNDSCHECK} opt={numba.config.OPT} debuginfo={numba.config.DEBUGINFO_DEFAULT}"
        digest.update(settings.encode())
        _STAMPS[name] = digest.hexdigest()
    return _STAMPS[name]


def _writable(path: str) -> bool:
    """Can this process create files in ``path`` (made if missing)? Tried for real: permission
    bits say nothing for root or on a read-only mount."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def private_temporary_folder() -> str | None:
    """``$TMPDIR/fastgd-numba-cache-<uid>``, created mode 0700, if this user owns it and nobody
    else can write it (Numba unpickles what it finds in a cache); else None."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    path = os.path.join(tempfile.gettempdir(), f"fastgd-numba-cache-{user}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError:
        return None
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        return None
    return path if _writable(path) else None


class _StampedLocator:
    # Mixin: a Numba locator whose freshness stamp covers the kernel modules a function is built
    # from (``module_stamp``), not only its own file's time stamp (Numba's), so an edit to a
    # kernel it calls, or a changed code-generation setting, recompiles instead of loading stale
    # machine code. The entries are named without the function's line number (Numba's
    # default), so that an edit above a function does not orphan its entry: the stamp decides.
    def get_source_stamp(self):
        return module_stamp(self._py_file)

    def get_disambiguator(self):
        return "fastgd"


class _UserProvided(_StampedLocator, _caching.UserProvidedCacheLocator):
    pass


class _InTree(_StampedLocator, _caching.InTreeCacheLocator):
    pass


class _UserWide(_StampedLocator, _caching.UserWideCacheLocator):
    pass


class _PrivateTemporary(_StampedLocator, _caching.UserProvidedCacheLocator):
    """Last resort when the install folder and the user's cache folder are both unwritable."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(_PRIVATE_FOLDER, self.get_suitable_cache_subpath(py_file))

    @classmethod
    def from_function(cls, py_func, py_file):
        if _PRIVATE_FOLDER is None:
            return None
        return _caching._SourceFileBackedLocatorMixin.from_function.__func__(cls, py_func, py_file)


_PRIVATE_FOLDER = None


class _CacheImpl(_caching.CompileResultCacheImpl):
    # Numba's order (NUMBA_CACHE_DIR, __pycache__ next to the source, ~/.cache/numba), then a
    # private temporary folder; every entry stamped per module (``module_stamp``).
    _locator_classes = [_UserProvided, _InTree, _UserWide, _PrivateTemporary]


class GuardedCache(_caching.FunctionCache):
    """Numba's on-disk cache of one kernel, stamped per module (``module_stamp``: the kernel's
    module, the kernel modules it imports and the code-generation settings), and
    tolerant of damage: an unreadable entry (Numba raises ``UnpicklingError``, ``EOFError``,
    ``ValueError``... on truncated or corrupt files) is deleted with a warning and the kernel
    recompiled; a failure to write an entry is a warning, never an error."""

    _impl_class = _CacheImpl

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as error:  # any unreadable entry: recompile instead
            self.discard(error)
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as error:  # a cache that cannot be written must not stop training
            self.discard(error)

    def discard(self, error) -> None:
        cache_file = self._cache_file
        index = cache_file._index_path
        data = os.path.join(os.path.dirname(index), cache_file._data_name_pattern.replace("{number:d}", "*"))
        for path in [index, *glob.glob(data)]:
            with contextlib.suppress(OSError):
                os.unlink(path)
        warnings.warn(
            f"fastgd: discarded an unreadable compile-cache entry for {self._py_func.__qualname__} "
            f"({type(error).__name__}: {error}) in {os.path.dirname(index)}; recompiling",
            RuntimeWarning,
            stacklevel=2,
        )

    @property
    def folder(self) -> str:
        return self._cache_path


def _choose_private_folder() -> None:
    # Decided once, before any kernel is defined: fastgd's own kernels fall back to a private
    # temporary folder when neither the install folder nor ~/.cache can be written.
    global _PRIVATE_FOLDER, CACHE_STATUS
    if numba.config.CACHE_DIR:
        return
    import importlib.util

    spec = importlib.util.find_spec(__package__)
    folder = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else os.path.dirname(__file__)
    if _writable(os.path.join(folder, "__pycache__")) or _writable(AppDirs(appname="numba", appauthor=False).user_cache_dir):
        return
    _PRIVATE_FOLDER = private_temporary_folder()
    if _PRIVATE_FOLDER is None:
        CACHE_STATUS = "off: no writable folder (install folder, ~/.cache and the temporary folder all refused)"
        warnings.warn(
            "fastgd: no writable folder for the compile cache (the install folder, ~/.cache and the "
            "temporary folder all refused); kernels are compiled in every process. Set NUMBA_CACHE_DIR.",
            RuntimeWarning,
            stacklevel=3,
        )
    else:
        CACHE_STATUS = "on (fallback: install folder and ~/.cache not writable)"


CACHE_STATUS = "on" if config.CACHE else "off (FASTGD_NUMBA_CACHE=0)"
if config.CACHE:
    _choose_private_folder()
CACHE_USABLE = config.CACHE and not CACHE_STATUS.startswith("off")

# Every kernel dispatcher defined through ``kernel``, for ``python -m fastgd compile`` and
# ``cache_directory``.
DISPATCHERS = []


def attach_cache(dispatcher) -> None:
    """Give a Numba dispatcher fastgd's guarded, stamped on-disk cache (what ``cache=True`` does
    with Numba's own cache class)."""
    if not CACHE_USABLE or not hasattr(dispatcher, "py_func"):  # cache off, or NUMBA_DISABLE_JIT
        return
    if os.environ.get("NUMBA_CACHE_LOCATOR_CLASSES"):
        dispatcher.enable_caching()  # the user chose Numba's locators: Numba's own cache
        return
    try:
        dispatcher._cache = GuardedCache(dispatcher.py_func)
    except RuntimeError:  # no locator can write anywhere: stay uncached
        pass


def kernel(**options):
    """``@njit(**options)`` plus fastgd's compile cache."""

    def wrap(function):
        dispatcher = njit(**options)(function)
        attach_cache(dispatcher)
        DISPATCHERS.append(dispatcher)
        return dispatcher

    return wrap


def make_piece(function, name, **constants):
    """A kernel compiled from ``function``'s code under its own ``name`` (so that it has its
    own cache entry), with some of its module's globals rebound to ``constants``: Numba treats
    globals as compile-time constants, so an activation's scalar function bound as ``VALUE``
    is inlined into the loop that calls it. A piece is called by address from other kernels
    (``piece_address``, ``call_piece``) and directly from Python."""
    namespace = dict(function.__globals__)
    namespace.update(constants)
    copy = pytypes.FunctionType(function.__code__, namespace, name, function.__defaults__, function.__closure__)
    copy.__qualname__ = name
    copy.__module__ = function.__module__
    copy.__doc__ = function.__doc__
    return kernel(**config.INTERNAL_OPTIONS)(copy)


def is_cached(dispatcher, argtypes) -> bool:
    """Whether ``dispatcher``'s on-disk cache holds a fresh entry for ``argtypes`` (read from its
    index, without loading the entry)."""
    cache = getattr(dispatcher, "_cache", None)
    if not isinstance(cache, GuardedCache):
        return False
    try:
        key = cache._index_key(tuple(argtypes), dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:  # an unreadable index: not cached (loading it will say why)
        return False


def cache_directory() -> str:
    """Where the kernels' compiled code is cached (or why it is not)."""
    for dispatcher in DISPATCHERS:
        cache = getattr(dispatcher, "_cache", None)
        path = getattr(cache, "_cache_path", None)
        if path:
            return path
    return f"(caching {CACHE_STATUS})"


# --------------------------------------------------------------------------- BLAS
def blas_gemm(dtype):
    """Numba's ``numba_xxgemm`` helper (SciPy's BLAS) and the BLAS kind letter for ``dtype``."""
    ensure_blas()
    return _BLAS().numba_xxgemm(dtype), ord(get_blas_kind(dtype))


def cblas_gemm_addresses():
    """``(sgemm, dgemm, ilp64)``: addresses of the row-major CBLAS ``?gemm`` of the OpenBLAS that
    NumPy's wheel bundles (0.3.31 here, against SciPy's 0.3.30: 90 against 78 GFLOP/s on one
    core for 128 × 784 × 256, the blocks the kernels hand out), or ``(0, 0, 0)`` when NumPy
    brings none, and the kernels call SciPy's BLAS through Numba instead. Looked up once."""
    global _CBLAS
    if _CBLAS is None:
        _CBLAS = (0, 0, 0)
        import ctypes

        folder = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
        for path in sorted(glob.glob(os.path.join(folder, "*openblas*"))):
            try:
                library = ctypes.CDLL(path)
            except OSError:
                continue
            for single, double, ilp64 in (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", 1), ("cblas_sgemm64_", "cblas_dgemm64_", 1),
                                          ("scipy_cblas_sgemm", "scipy_cblas_dgemm", 0), ("cblas_sgemm", "cblas_dgemm", 0)):  # fmt: skip
                try:
                    functions = getattr(library, single), getattr(library, double)
                except AttributeError:
                    continue
                _CBLAS = tuple(ctypes.cast(f, ctypes.c_void_p).value for f in functions) + (ilp64,)
                return _CBLAS
    return _CBLAS


_CBLAS = None


@intrinsic
def call_cblas_gemm(typingctx, address, ilp64, transpose_a, transpose_b, m, n, k, a, lda, b, ldb, c, ldc):
    """Call a row-major CBLAS ``?gemm`` at ``address`` (an int64 known at run time, so that the
    code stays cacheable): ``C = op(A) @ op(B)`` with alpha 1 and beta 0; ``a``, ``b``, ``c`` are
    pointers (``address_of``), the transpose flags 111 (no) or 112 (yes), ``ilp64`` whether the
    library takes 64-bit integers."""
    if not isinstance(a, types.CPointer) or a.dtype not in (types.float32, types.float64):
        return None
    signature = types.void(address, ilp64, transpose_a, transpose_b, m, n, k, a, lda, b, ldb, c, ldc)

    def codegen(context, builder, sig, args):
        address, ilp64, transpose_a, transpose_b, m, n, k, a, lda, b, ldb, c, ldc = args
        element = context.get_value_type(sig.args[7].dtype)
        i32, pointer = ir.IntType(32), a.type
        ints = [(m, sig.args[4]), (n, sig.args[5]), (k, sig.args[6]), (lda, sig.args[8]), (ldb, sig.args[10]), (ldc, sig.args[12])]
        flag_a = context.cast(builder, transpose_a, sig.args[2], types.int32)
        flag_b = context.cast(builder, transpose_b, sig.args[3], types.int32)
        wide = builder.icmp_signed("!=", context.cast(builder, ilp64, sig.args[1], types.int64), ir.Constant(ir.IntType(64), 0))
        one, zero = ir.Constant(element, 1.0), ir.Constant(element, 0.0)
        with builder.if_else(wide) as (then, otherwise):
            for block, width in ((then, types.int64), (otherwise, types.int32)):
                with block:
                    integer = context.get_value_type(width)
                    m_, n_, k_, lda_, ldb_, ldc_ = (context.cast(builder, v, t, width) for v, t in ints)
                    function_type = ir.FunctionType(ir.VoidType(), [i32, i32, i32, integer, integer, integer, element, pointer, integer,
                                                                   pointer, integer, element, pointer, integer])  # fmt: skip
                    function = builder.inttoptr(context.cast(builder, address, sig.args[0], types.int64), function_type.as_pointer())
                    builder.call(function, [ir.Constant(i32, 101), flag_a, flag_b, m_, n_, k_, one, a, lda_, b, ldb_, zero, c, ldc_])
        return context.get_dummy_value()

    return signature, codegen


# --------------------------------------------------------------------------- memory
def _pointer(context, builder, array_type, array, index):
    ary = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, ary, [index], wraparound=False)


@intrinsic
def address_of(typingctx, array, index):
    """A pointer to ``array[index]`` of a 1-D array (no bounds check): where a block of a flat
    buffer starts, for BLAS."""
    if not isinstance(array, types.Array) or array.ndim != 1:
        return None

    def codegen(context, builder, signature, args):
        return _pointer(context, builder, signature.args[0], args[0], args[1])

    return types.CPointer(array.dtype)(array, types.intp), codegen


def array_data(context, builder, array_type, array):
    """The data pointer of a Numba array value, for hand-written IR (``microkernel``)."""
    return context.make_array(array_type)(context, builder, array).data


def llvm_function(builder, name, return_type, argument_types):
    """Declare (once per module) and return an LLVM function, e.g. an ``llvm.*`` intrinsic."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(return_type, list(argument_types)), name)


def _int64_array(array):
    return isinstance(array, types.Array) and array.dtype == types.int64


@intrinsic
def atomic_load(typingctx, array, index):
    """``array[index]`` (int64) read with acquire ordering: a write another thread released
    before is visible, and LLVM cannot hoist the read out of a loop."""
    if not _int64_array(array):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_pointer(context, builder, signature.args[0], args[0], args[1]), "acquire", 8)

    return types.int64(array, types.intp), codegen


@intrinsic
def atomic_store(typingctx, array, index, value):
    """``array[index] = value`` (int64) with release ordering."""
    if not _int64_array(array):
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(value, _pointer(context, builder, signature.args[0], args[0], args[1]), "release", 8)
        return context.get_dummy_value()

    return types.void(array, types.intp, types.int64), codegen


@intrinsic
def atomic_add(typingctx, array, index, value):
    """``array[index] += value`` (int64) atomically; returns the value before."""
    if not _int64_array(array):
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", _pointer(context, builder, signature.args[0], args[0], args[1]), value, "acq_rel")

    return types.int64(array, types.intp, types.int64), codegen


_PAUSE = "llvm.x86.sse2.pause" if numba.config.MACHINE_BITS == 64 and os.uname().machine in ("x86_64", "AMD64") else None


@intrinsic
def spin_pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``; nothing elsewhere)."""

    def codegen(context, builder, signature, args):
        if _PAUSE is not None:
            function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), _PAUSE)
            builder.call(function, [])
        return context.get_dummy_value()

    return types.void(), codegen


if os.name == "posix":
    # libc's sched_yield, resolved by name when the kernel is linked (nothing process-specific
    # is baked into the code, so kernels calling it stay cacheable).
    _sched_yield = types.ExternalFunction("sched_yield", types.int32())

    @njit(inline="always")
    def yield_cpu():
        """Let another thread run on this core (a waiting thread's back-off)."""
        _sched_yield()

else:  # pragma: no cover - Windows

    @njit(inline="always")
    def yield_cpu():
        """Let another thread run on this core (a no-op where sched_yield is missing)."""
        return


if hasattr(time, "CLOCK_MONOTONIC"):
    # libc's clock_gettime (the vDSO's: ~20 ns), writing a struct timespec (two 64-bit fields on
    # the 64-bit platforms fastgd runs on) into two int64 slots of an array.
    _clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.CPointer(types.int64)))
    _MONOTONIC = time.CLOCK_MONOTONIC

    @njit(inline="always")
    def monotonic_ns(buffer, index):
        """A monotonic clock in nanoseconds, read from compiled code (``buffer[index:index+2]``
        of an int64 array is its scratch space)."""
        _clock_gettime(np.int32(_MONOTONIC), address_of(buffer, index))
        return buffer[index] * 1_000_000_000 + buffer[index + 1]

else:  # pragma: no cover

    @njit(inline="always")
    def monotonic_ns(buffer, index):
        """No monotonic clock here: time never advances (timed visits then never fall due)."""
        return np.int64(0)


@intrinsic
def unsigned(typingctx, value):
    """An int64 index or size as uint64, same bits. Numba checks every signed array index for
    wraparound (a negative index counts from the end): in a loop over ``range(start, stop)`` that
    check stops LLVM from vectorising, unless it can prove ``start >= 0``. Kernels that index flat
    buffers at offsets do their index arithmetic in uint64 (mixing in a signed integer would make
    it float64, which no array accepts as an index: a compile error, not a silent slowdown)."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], signature.args[0], types.int64)

    return types.uint64(value), codegen


@intrinsic
def float32_from_bits(typingctx, bits):
    """Reinterpret an int32 bit pattern as a float32 (what C does with a union)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def float64_from_bits(typingctx, bits):
    """Reinterpret an int64 bit pattern as a float64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def float64_bits(typingctx, value):
    """The int64 bit pattern of a float64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


# --------------------------------------------------------------------------- threadpoolctl
def set_library_threads(library, n) -> None:
    """Set a threadpoolctl library controller's thread count from any Python thread.

    threadpoolctl (>= 3.6) ignores OpenBLAS limits set from any Python thread but the first one
    that set one, as long as that thread lives; fastgd serialises its own settings under one
    lock, so it goes to the library's setter directly. (Measured: a fit run in a second thread
    otherwise trained with 2 BLAS threads.)
    """
    setter = getattr(library, "_real_set_num_threads", None) or library.set_num_threads
    setter(n)


# threadpoolctl controls the thread pools of the shared libraries loaded in a process, found by
# their file names; fastgd's team is found through this one of Numba's (numba._helperlib,
# loaded whenever Numba is), see fastgd._threads.TeamController.
TEAM_LIBRARY_PREFIX = "_helperlib"


def register_controller(controller) -> None:
    """Register a threadpoolctl library controller (``threadpoolctl.register``, 3.5 and later;
    with an older threadpoolctl fastgd's team is not controlled by it)."""
    import threadpoolctl

    register = getattr(threadpoolctl, "register", None)
    if register is not None:
        register(controller)


def dtype_of(array) -> np.dtype:
    return np.dtype(array.dtype.name)


# --------------------------------------------------------------------------- pieces by address
# A kernel calls another compiled apart (a piece: an activation, a loss, a product path, an
# optimizer's update) by its machine-code address, known at run time: the caller's code does
# not contain the callee, so each is compiled once and cached on its own, and the caller stays
# cacheable. The call follows Numba's own calling convention (exceptions propagate as from any
# compiled call); the callee must have been compiled for exactly the argument types of the
# call site (``kernels.pieces`` declares them once per kind of piece).


def piece_address(dispatcher, argtypes) -> int:
    """Compile ``dispatcher`` for exactly ``argtypes`` (or load it from the cache) and return
    the address of that compilation's function (Numba's calling convention)."""
    argtypes = tuple(argtypes)
    if argtypes not in dispatcher.overloads:
        dispatcher.compile(argtypes)
    result = dispatcher.overloads[argtypes]
    return int(result.library.get_pointer_to_function(result.fndesc.llvm_func_name))


@intrinsic
def call_piece(typingctx, returns, address, arguments):
    """``piece(*arguments)`` for the piece compiled at ``address`` (an int64), returning a
    value of ``returns``' type (``np.int64(0)``: an int64; ``0.0``: a float64)."""
    if not isinstance(arguments, types.BaseTuple) or not isinstance(address, types.Integer):
        return None
    result_type = types.unliteral(returns)
    given = tuple(arguments.types)
    argument_types = tuple(types.unliteral(t) for t in given)  # a literal constant goes as its type
    signature = result_type(returns, address, arguments)

    def codegen(context, builder, sig, args):
        values = [context.cast(builder, builder.extract_value(args[2], i), given[i], argument_types[i]) for i in range(len(given))]
        function_type = context.call_conv.get_function_type(result_type, argument_types)
        function = builder.inttoptr(context.cast(builder, args[1], sig.args[1], types.int64), function_type.as_pointer())
        status, result = context.call_conv.call_function(builder, function, result_type, argument_types, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return result

    return signature, codegen


# --------------------------------------------------------------------------- entry points
def compile_exact(dispatcher, argtypes) -> None:
    """Compile ``dispatcher`` for ``argtypes`` (or load it from the cache), and stop it from
    compiling new signatures on its own: a call must match a signature compiled this way (a
    mismatch is an error naming the types, never a silent compile of another variant)."""
    argtypes = tuple(argtypes)
    if argtypes not in dispatcher.overloads:
        dispatcher.disable_compile(False)
        try:
            dispatcher.compile(argtypes)
        finally:
            dispatcher.disable_compile(True)
    dispatcher.disable_compile(True)


def array_type(dtype, ndim=1, readonly=False):
    """The Numba type of a C-contiguous, aligned array (writable unless ``readonly``)."""
    return types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C", readonly=readonly)


_TYPES_BY_FINGERPRINT = {}


def typeof(value):
    """``numba.typeof(value)``, remembered by Numba's own fingerprint of the value (the one its
    dispatcher finds compiled signatures by: dtype, dimensions, layout and writability of every
    array, the kind of every scalar) and the value's class. A fit types its bundles, some eighty
    arrays, several times; ``numba.typeof`` built their types anew each time (~2 ms a fit)."""
    try:
        key = (type(value), _dispatcher.compute_fingerprint(value))
    except (NotImplementedError, TypeError, ValueError):  # a value Numba has no fingerprint for
        return numba.typeof(value)
    found = _TYPES_BY_FINGERPRINT.get(key)
    if found is None:
        found = _TYPES_BY_FINGERPRINT[key] = numba.typeof(value)
    return found
