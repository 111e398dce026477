"""What a network and its fit will allocate, and what this machine has free: refuse, before
allocating anything large, what cannot fit.

A mistyped size (``hidden_layer_sizes=(230_000_000,)``) used to allocate gigabytes for a minute,
and push the machine into swap, before failing. The estimate here is arithmetic on the sizes
(microseconds), made before the first large buffer is allocated; :func:`check` compares it with
:func:`available_bytes` and raises :class:`InsufficientMemoryError` naming the argument that
sizes most of it, the bytes needed and the bytes available.

What is counted (read off what fastgd allocates today: ``fastgd.network.Network``,
``kernels.layout.make_work``, ``make_epoch_end``, ``make_evaluation``, ``fastgd.training.trainer``
and ``fastgd.sklearn``), for ``n_p`` parameters of ``s`` bytes each:

* the network: its parameters, the copy of its initial parameters (``restart``, ``warm_start=False``)
  and its optimizer state (one row of ``n_p`` per state slot: 1 for SGD, 3 for Adam; 1 at
  construction), and at construction the largest weight matrix drawn in float64 by the initializer;
* per fit (``make_work``): the gradients and the transposed weights (a row of ``n_p`` per shard of
  a batch), the end-of-epoch snapshot of the parameters and of the optimizer state (kept for
  divergence and Ctrl-C); per batch the inputs and targets gathered, and each shard's activations,
  slopes (f'(z)) and local gradients (``rows × units`` each, units = every layer's outputs) and
  the output layer's pre-activations (``rows × n_out``); per row of the data
  the epoch's order and shuffle keys (8 bytes each);
* with validation (``make_epoch_end``): copies of the validation rows, an evaluation of them
  (activations, slopes and local gradients, ``rows × units`` each, the output layer's
  pre-activations, the transposed weights) and the best
  epoch's parameters (and the stopping rule's copy of them at the end);
* a full-batch L-BFGS fit (``fastgd.sklearn``): an evaluation of every row (or block of rows)
  and SciPy's float64 vectors;
* streamed data: two chunks of rows;
* per thread: nothing. The compiled kernels' threads take blocks of the per-shard buffers above;
  none keeps a buffer of its own (``per_thread_bytes`` is there for an engine that does).

Small fixed buffers (the control array, per-layer partial sums, a float per epoch) are left out;
the estimate is of the large ones, each counted when it is certainly allocated.

The memory available (:func:`available_bytes`): what the kernel says can be allocated without
swapping: ``MemAvailable`` from ``/proc/meminfo`` (Linux: free memory plus the page cache it
can drop), else ``os.sysconf`` (``SC_AVPHYS_PAGES``: free pages, where it exists), else
``GlobalMemoryStatusEx`` (Windows, through ctypes), else the physical memory
(``SC_PHYS_PAGES``, macOS); bounded by the cgroup's memory limit when the process runs in one (a
container). No source that is missing or unreadable raises: when none answers the check passes
(nothing is known to be short).
"""

from __future__ import annotations

import functools
import os
import sys
from typing import NamedTuple

import numpy as np

GIB = float(1 << 30)
# SciPy's L-BFGS-B keeps this many correction pairs (its default ``maxcor``), in a workspace of
# 2·LBFGS_CORRECTIONS + 5 vectors of the variables, and about LBFGS_EXTRA_VECTORS more float64
# vectors besides (the point, the gradient, the bounds, its function wrapper's copies, fastgd's
# float64 gradient): measured with SciPy 1.17 (tracemalloc's peak over an L-BFGS fit).
LBFGS_CORRECTIONS = 10
LBFGS_EXTRA_VECTORS = 13


class InsufficientMemoryError(MemoryError, ValueError):
    """A network or fit that would need more memory than this machine has available.

    Both a ``MemoryError`` (what it is) and a ``ValueError`` (an argument's value is what makes
    it so: code that catches bad arguments catches it, as scikit-learn's model selection does).
    Raised before anything large is allocated.

    Attributes
    ----------
    argument : str
        The argument whose value sizes most of what was needed (``layer_sizes``,
        ``hidden_layer_sizes``, ``batch_size``...).
    needed, available : int
        Bytes the estimate needs and bytes available.
    parts : dict of str to int
        The estimate's parts, in bytes.
    """

    def __init__(self, message, argument=None, needed=0, available=0, parts=None):
        super().__init__(message)
        self.argument, self.needed, self.available = argument, int(needed), int(available)
        self.parts = dict(parts or {})

    def __reduce__(self):  # (pickled with its attributes: joblib's workers send it back)
        return type(self), (self.args[0], self.argument, self.needed, self.available, self.parts)


class Part(NamedTuple):
    """One allocation of an estimate: its bytes, the kind of argument that sizes it
    (``"layers"``, ``"batch"``, ``"validation"``, ``"rows"``), and the bytes it would still
    take with one row of that kind (``floor``: a batch's activations take a row's worth of every
    layer's units whatever the batch size)."""

    bytes: int
    sized_by: str
    floor: int = 0


class Estimate(dict):
    """Parts of an estimate by name (``{name: Part}``); ``total`` is their sum in bytes."""

    @property
    def total(self) -> int:
        return sum(part.bytes for part in self.values())

    def layers_floor(self) -> int:
        """Bytes needed whatever the rows: every part sized by the layers, and the others at
        one row (``Part.floor``)."""
        return sum(part.bytes if part.sized_by == "layers" else part.floor for part in self.values())

    def by_size(self) -> dict:
        """Bytes per kind of argument (``Part.sized_by``) above their floor."""
        sizes: dict = {}
        for part in self.values():
            sizes[part.sized_by] = (
                sizes.get(part.sized_by, 0) + part.bytes - (0 if part.sized_by == "layers" else part.floor)
            )
        return sizes

    def describe(self) -> str:
        """The parts of at least 1 % of the total, largest first, in GiB (``"parameters 12 GiB,
        gradients 12 GiB, ... and 3 smaller"``)."""
        parts = sorted(((part.bytes, name) for name, part in self.items() if part.bytes), reverse=True)
        shown = [f"{name} {size / GIB:.3g} GiB" for size, name in parts if size * 100 >= self.total]
        rest = len(parts) - len(shown)
        return ", ".join(shown) + (f" and {rest} smaller" if rest else "")


# --------------------------------------------------------------------------- estimates


def parameter_count(layer_sizes) -> int:
    """Weights and biases of a dense network with these layer sizes (input first)."""
    sizes = [int(size) for size in layer_sizes]
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def network_estimate(layer_sizes, dtype) -> Estimate:
    """What ``fastgd.Network(layer_sizes, dtype=dtype)`` allocates: the parameters, their initial
    copy, a one-slot optimizer state, and the largest weight matrix as the initializer draws it
    (float64, freed once copied in)."""
    sizes = [int(size) for size in layer_sizes]
    n_params, itemsize = parameter_count(sizes), np.dtype(dtype).itemsize
    largest = max(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    return Estimate(
        {
            "parameters": Part(n_params * itemsize, "layers"),
            "initial parameters": Part(n_params * itemsize, "layers"),
            "optimizer state": Part(n_params * itemsize, "layers"),
            "initializer's draw": Part(largest * 8, "layers"),
        }
    )


def fit_estimate(
    layer_sizes,
    dtype,
    *,
    rows,
    batch_size,
    state_slots,
    shards=1,
    validation_rows=0,
    restore_best=False,
    chunk_rows=None,
    lbfgs=False,
    network=True,
    per_thread_bytes=0,
    threads=1,
) -> Estimate:
    """What a fit allocates while it trains, the network's own buffers included.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, input first.
    dtype : numpy dtype or str
        The network's dtype.
    rows : int
        Training rows (this process's).
    batch_size : int
        Rows per step (at most ``rows``).
    state_slots : int
        The optimizer's state rows (``len(optimizer.state_names)``, at least 1).
    shards : int, default 1
        Shards of a batch (``grad_shards``, data-parallel ranks).
    validation_rows : int, default 0
        Rows of validation data evaluated after each epoch.
    restore_best : bool, default False
        The best epoch's parameters are kept (early stopping that restores them).
    chunk_rows : int, optional
        Streamed data: rows per chunk (two chunks are held); the work buffers cover a chunk.
    lbfgs : bool, default False
        A full-batch L-BFGS fit (``fastgd.sklearn``'s ``solver="lbfgs"``): an evaluation over
        ``batch_size`` rows, one gradient, and SciPy's float64 vectors (its workspace of
        ``2·LBFGS_CORRECTIONS + 5`` vectors of the parameters, and ``LBFGS_EXTRA_VECTORS``
        more), in place of the stochastic solvers' work buffers.
    network : bool, default True
        Count the network's parameters, initial copy and optimizer state (False: counted
        elsewhere, as by an estimate the caller adds to).
    per_thread_bytes, threads : int
        Buffers each thread keeps (none in today's engine) and the threads.

    Returns
    -------
    Estimate
    """
    sizes = [int(size) for size in layer_sizes]
    itemsize = np.dtype(dtype).itemsize
    n_params, n_in, n_out = parameter_count(sizes), sizes[0], sizes[-1]
    units = sum(sizes[1:])
    rows, batch, shards = int(rows), max(1, int(batch_size)), max(1, int(shards))
    slots = max(1, int(state_slots))
    parts = Estimate()
    if network:
        parts["parameters"] = Part(n_params * itemsize, "layers")
        parts["initial parameters"] = Part(n_params * itemsize, "layers")
        # (L-BFGS never sets an optimizer: the network keeps the one row it was built with)
        parts["optimizer state"] = Part((1 if lbfgs else slots) * n_params * itemsize, "layers")
    if lbfgs:
        vectors = 2 * LBFGS_CORRECTIONS + 5 + LBFGS_EXTRA_VECTORS
        parts["L-BFGS vectors"] = Part(vectors * n_params * 8, "layers")
        parts["gradients"] = Part(n_params * itemsize, "layers")
        parts["transposed weights"] = Part(n_params * itemsize, "layers")
        row = (3 * units + n_out) * itemsize  # acts, slopes, deltas; the output layer's zs
        parts["activations and local gradients"] = Part(row * batch, "batch", row)
        parts["targets and row weights"] = Part(rows * (n_out + 1) * itemsize, "rows", (n_out + 1) * itemsize)
        return parts
    shard_rows = -(-batch // shards)
    parts["gradients"] = Part(shards * n_params * itemsize, "layers")
    parts["transposed weights"] = Part(shards * n_params * itemsize, "layers")
    parts["end-of-epoch snapshot"] = Part((1 + slots) * n_params * itemsize, "layers")
    row = (3 * units + n_out) * itemsize  # acts, slopes, deltas; the output layer's zs
    parts["activations and local gradients"] = Part(shards * shard_rows * row, "batch", row)
    parts["gathered batch"] = Part(batch * (n_in + n_out + 1) * itemsize, "batch", (n_in + n_out + 1) * itemsize)
    work_rows = rows if chunk_rows is None else min(rows, int(chunk_rows))
    parts["row order"] = Part(16 * (work_rows + (rows if chunk_rows is not None else 0)), "rows", 16)
    if chunk_rows is not None:
        parts["streamed chunks"] = Part(
            2 * work_rows * (n_in + n_out + 1) * itemsize, "rows", (n_in + n_out + 1) * itemsize
        )
    if validation_rows:
        n_val = int(validation_rows)
        parts["validation rows"] = Part(
            n_val * (n_in + n_out + 1) * itemsize, "validation", (n_in + n_out + 1) * itemsize
        )
        row = (3 * units + n_out) * itemsize  # acts, slopes, deltas; the output layer's zs
        parts["validation activations"] = Part(n_val * row, "validation", row)
        parts["validation transposed weights"] = Part(n_params * itemsize, "layers")
    if restore_best:
        # The best epoch's snapshot, and the copy the stopping rule keeps of it when the fit ends.
        parts["best parameters"] = Part(2 * n_params * itemsize, "layers")
    if per_thread_bytes:
        parts["per-thread buffers"] = Part(int(per_thread_bytes) * max(1, int(threads)), "batch")
    return parts


# --------------------------------------------------------------------------- the check


def check(estimate, arguments, available=None) -> None:
    """Raise :class:`InsufficientMemoryError` when ``estimate`` needs more than is available.

    Parameters
    ----------
    estimate : Estimate
    arguments : dict
        ``{sized_by: (argument name, value)}``: the argument to name for each kind of part
        (``"layers"``, ``"batch"``, ``"validation"``, ``"rows"``), its value shown beside it
        unless None; the one whose parts are largest is named.
    available : int, optional
        Bytes available; default :func:`available_bytes` (None: unknown, nothing refused).
    """
    needed = estimate.total
    if available is None:
        available = available_bytes()
    if available is None or needed <= available:
        return
    # The layers are named when they alone cannot fit (with one row of everything else: no
    # batch size helps then), else the argument whose rows take most above that.
    floor = estimate.layers_floor()
    if floor > available and "layers" in arguments:
        kind = "layers"
    else:
        sizes = {kind: size for kind, size in estimate.by_size().items() if kind in arguments and kind != "layers"}
        kind = max(sizes, key=sizes.get, default="layers" if "layers" in arguments else None)
    name, value = arguments.get(kind, ("the arguments", None))
    subject = name if value is None else f"{name}={value!r}"
    if kind == "layers":
        subject += f" (at least {floor / GIB:.1f} GiB with a single row per batch)"
    raise InsufficientMemoryError(
        f"{subject}: this needs about {needed / GIB:.1f} GiB ({needed} bytes: {estimate.describe()}), more than this "
        f"machine's {available / GIB:.1f} GiB ({available} bytes) of available memory; nothing was allocated. "
        f"Use a smaller {name}.",
        name,
        needed,
        available,
        {key: part.bytes for key, part in estimate.items()},
    )


def check_network(layer_sizes, dtype, argument="layer_sizes", available=None) -> None:
    """Refuse a ``Network(layer_sizes, dtype=dtype)`` that cannot fit, before its buffers exist
    (``Network.__init__``, once ``layer_sizes`` and ``dtype`` are checked)."""
    check(network_estimate(layer_sizes, dtype), {"layers": (argument, list(layer_sizes))}, available)


def check_fit(net, plan, available=None) -> None:
    """Refuse a fit that cannot fit, before it changes or allocates anything
    (``fastgd.training.fit``, once its ``Plan`` is made).

    Parameters
    ----------
    net : fastgd.Network
    plan : fastgd.training.plan.Plan
        Its ``X``, ``batch``, ``batch_size``, ``optimizer``, ``grad_shards``, ``validation``,
        ``stopping`` and ``stream`` are read.
    """
    from .kernels import layout  # (imports Numba: only here, where a fit is being made)

    rows = int(plan.X.shape[0])
    # As the Trainer cuts batches (with ranks, each rank's buffers are one shard of a batch).
    shards, _ = layout.shard_plan(net.architecture, plan.batch, plan.grad_shards or 0)
    chunk = None
    if plan.stream is not None:
        from .streaming import chunk_rows

        chunk = chunk_rows(plan.stream[0], plan.batch, net.layer_sizes[0], net.layer_sizes[-1], net.dtype)
    stopping = plan.stopping
    estimate = fit_estimate(
        net.layer_sizes,
        net.dtype,
        rows=rows,
        batch_size=plan.batch,
        state_slots=len(plan.optimizer.state_names),
        shards=shards,
        validation_rows=0 if plan.validation is None else plan.validation[0].shape[0],
        restore_best=stopping is not None and stopping.restore_best,
        chunk_rows=chunk,
    )
    # The network's parameters and initial copy exist already; a new optimizer's state is new.
    estimate.pop("parameters")
    estimate.pop("initial parameters")
    if plan.optimizer is net.optimizer:
        estimate.pop("optimizer state")
    check(
        estimate,
        {
            "layers": ("layer_sizes", list(net.layer_sizes)),
            "batch": ("batch_size", plan.batch_size),
            "validation": ("the validation data", None),
            "rows": ("X", None),
        },
        available,
    )


# --------------------------------------------------------------------------- available memory


def available_bytes() -> int | None:
    """Bytes this process can allocate without swapping, or None when nothing here says.

    The first source that answers (``/proc/meminfo``'s MemAvailable, ``os.sysconf``'s
    available pages, Windows' ``GlobalMemoryStatusEx``, the physical memory), bounded by the
    cgroup's limit (what is left of ``memory.max``) when there is one. See the module's
    docstring for why in that order.
    """
    found = None
    for source in (_meminfo_available, _sysconf_available, _windows_available, _physical_bytes):
        found = _answer(source)
        if found is not None:
            break
    limit = _answer(_cgroup_available)
    if limit is not None:
        found = limit if found is None else min(found, limit)
    return found


def _answer(source):
    # A source's answer, or None: a missing file, an unknown sysconf name, a platform without
    # the call, an unreadable value... never raises.
    try:
        value = source()
    except Exception:  # noqa: BLE001 (no fallback may crash: any failure means "unknown")
        return None
    if value is None or isinstance(value, bool):
        return None
    try:
        value = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if value >= 0 else None


def _meminfo_available(path="/proc/meminfo"):
    # Linux (3.14 and later): MemAvailable, in kB: free memory plus what the kernel can reclaim
    # (page cache, reclaimable slabs) without swapping. SC_AVPHYS_PAGES there counts free pages
    # only, which a busy page cache leaves near zero.
    with open(path, "rb") as meminfo:
        for line in meminfo:
            if line.startswith(b"MemAvailable:"):
                fields = line.split()
                unit = fields[2].lower() if len(fields) > 2 else b"kb"
                return int(fields[1]) * {b"kb": 1024, b"b": 1}[unit]
    return None


def _sysconf_available():
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _physical_bytes():
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _windows_available():
    if sys.platform != "win32":
        return None
    import ctypes

    class MemoryStatus(ctypes.Structure):  # MEMORYSTATUSEX
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return status.ullAvailPhys


def _cgroup_available(root="/sys/fs/cgroup", self_cgroup="/proc/self/cgroup"):
    # A container's limit: cgroup v2 (memory.max, memory.current, at this process's cgroup and
    # every parent), else v1 (memory/memory.limit_in_bytes). The usage counts page cache the
    # kernel can drop; its inactive part is given back as available.
    left = []
    for folder, version in _cgroup_folders(root, self_cgroup):
        if version == 2:
            limit, used = (
                _read_number(os.path.join(folder, "memory.max")),
                _read_number(os.path.join(folder, "memory.current")),
            )
            inactive = _inactive_file(os.path.join(folder, "memory.stat"), b"inactive_file")
        else:
            limit, used = (
                _read_number(os.path.join(folder, "memory.limit_in_bytes")),
                _read_number(os.path.join(folder, "memory.usage_in_bytes")),
            )
            inactive = _inactive_file(os.path.join(folder, "memory.stat"), b"total_inactive_file")
        if limit is not None and limit < _V1_UNLIMITED:
            left.append(limit - (used or 0) + inactive)
    return max(0, min(left)) if left else None


# cgroup v1 reads "no limit" as a page-rounded 2**63.
_V1_UNLIMITED = 1 << 60


@functools.lru_cache(maxsize=8)
def _cgroup_folders(root, self_cgroup) -> tuple:
    """The cgroup folders that may limit this process's memory (those with a limit file):
    ``(folder, version)``. Looked up once (a process stays in its cgroup, whose folders stay);
    their limits and usage are read each time."""
    folders = []
    try:
        with open(self_cgroup) as lines:
            paths = [line.rstrip("\n").split(":", 2)[2] for line in lines if line.startswith("0::")]
    except (OSError, IndexError):
        paths = []
    for path in paths:
        parts = [part for part in path.split("/") if part]
        for depth in range(len(parts), -1, -1):
            folder = os.path.join(root, *parts[:depth])
            if os.path.isfile(os.path.join(folder, "memory.max")):
                folders.append((folder, 2))
    v1 = os.path.join(root, "memory")
    if os.path.isfile(os.path.join(v1, "memory.limit_in_bytes")):
        folders.append((v1, 1))
    return tuple(folders)


def _read_number(path):
    # A cgroup file's number; None when it is missing, unreadable or "max" (no limit).
    try:
        with open(path, "rb") as file:
            text = file.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _inactive_file(path, key) -> int:
    try:
        with open(path, "rb") as stat:
            for line in stat:
                name, _, value = line.partition(b" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0
