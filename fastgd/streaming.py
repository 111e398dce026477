"""Training on data larger than memory: ``fit`` streams rows from array-likes in chunks.

``fit`` takes, besides in-memory arrays, any array-like with NumPy-style positional row access:
``numpy.memmap``, zarr arrays, HDF5 datasets (h5py), or another object with ``shape``, ``ndim``,
``dtype`` and ``__getitem__`` taking a slice of rows. Such data is streamed: each epoch's row
order is drawn as for in-memory data (the same (seed, epoch) permutation, so the batches and the
trained parameters are bitwise those of the same data in memory), then cut into chunks of whole
batches; the rows of a chunk are read (in increasing row order, merged into runs) into
preallocated buffers of the network's dtype, the next chunk being read in a helper thread while
the compiled loop trains on the current one. Python runs once per chunk, not per step.

Memory: two chunk buffers (``Streaming.chunk_mb`` each, default 64 MB), 16 bytes per row for the
epoch's order, the sample weights (one value per row), and the network's buffers. A
``numpy.memmap`` is read from its file with ``os.preadv`` (consecutive rows in one call), not
through the mapping, so its pages never count in the process's resident memory; other stores'
pages, where they are mapped, are handed back after each block (``madvise(MADV_DONTNEED)``).

Row order: ``shuffle=True`` visits the rows in a fresh random order each epoch. On data that does
not fit the page cache every chunk then reads rows scattered over the whole file. ``shuffle=
"blocks"`` trades randomness for locality: the data is cut into blocks of ``block_rows``
consecutive rows, the blocks are visited in a random order (keyed on seed and epoch), and the
rows are shuffled within windows of ``window_blocks`` consecutive blocks of that order (keyed on
seed, epoch and window), so each chunk reads a few long runs. Rows that are near each other in
the file then tend to share batches: shuffle the file once beforehand if its order is
meaningful (sorted by label, by time).

Input checks read the data once, a block of rows at a time (``check_rows``).
"""

from __future__ import annotations

import concurrent.futures
import mmap
import numbers
import os
from dataclasses import dataclass

import numpy as np

# Modules whose objects NumPy converts as a whole (label-based or device arrays): never
# streamed row by row.
_CONVERTED_WHOLE = ("pandas", "torch", "jax", "jaxlib", "tensorflow", "cupy", "polars", "xarray", "dask")
# Rows read per block when checking or reading sequentially: about this many bytes.
CHECK_BLOCK_BYTES = 8 << 20
# Rows closer than this are read as one run (a few rows read for nothing beats a read call each).
MERGE_GAP_ROWS = 32


@dataclass(frozen=True)
class Streaming:
    """How ``fit`` streams out-of-core data (``fit(..., streaming=Streaming(...))``).

    Parameters
    ----------
    chunk_mb : float, default 64
        Rows read per chunk, in megabytes of the network's dtype (inputs and targets): the
        chunk holds as many whole batches as fit (at least one). Two chunks are held at a time.
    block_rows : int, optional
        ``shuffle="blocks"``: rows per block; default: a chunk's rows / ``window_blocks``.
    window_blocks : int, default 16
        ``shuffle="blocks"``: blocks whose rows are shuffled together.
    prefetch : bool, default True
        Read the next chunk in a helper thread while training on the current one.
    """

    chunk_mb: float = 64.0
    block_rows: int | None = None
    window_blocks: int = 16
    prefetch: bool = True

    def __post_init__(self):
        if isinstance(self.chunk_mb, bool) or not isinstance(self.chunk_mb, numbers.Real) or not self.chunk_mb > 0:
            raise ValueError(f"chunk_mb must be a number > 0, got {self.chunk_mb!r}")
        for name in ("block_rows", "window_blocks"):
            value = getattr(self, name)
            if value is None and name == "block_rows":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.prefetch, bool):
            raise TypeError(f"prefetch must be a bool, got {type(self.prefetch).__name__}")


def is_streamed(value) -> bool:
    """Whether ``fit`` streams ``value`` rather than converting it to an in-memory array: a
    ``numpy.memmap``, or a non-NumPy array-like with ``shape``, ``ndim``, ``dtype`` and
    ``__getitem__`` (zarr, h5py...), except the libraries NumPy converts whole (pandas, PyTorch...)."""
    if isinstance(value, np.memmap):
        return True
    if isinstance(value, (np.ndarray, list, tuple)) or value is None:
        return False
    if type(value).__module__.split(".")[0] in _CONVERTED_WHOLE:
        return False
    return all(hasattr(value, name) for name in ("shape", "ndim", "dtype", "__getitem__"))


def _block_rows(array) -> int:
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * np.dtype(array.dtype).itemsize)
    return max(1, CHECK_BLOCK_BYTES // row_bytes)


def blocks_of(array):
    """``(start, rows)`` of ``array`` block after block (``CHECK_BLOCK_BYTES`` each), read in order."""
    n = int(array.shape[0])
    step = _block_rows(array)
    for start in range(0, n, step):
        yield start, np.asarray(array[start : min(start + step, n)])
        release(array)


def release(array) -> None:
    """Hand back the pages a shared, read-only use of a memory map brought into this process
    (they stay in the page cache); a no-op for anything else."""
    base = _mmap_of(array)
    if base is None or getattr(array, "mode", "r") not in ("r", "r+") or not hasattr(base, "madvise"):
        return
    try:
        base.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # not supported here: the kernel reclaims the pages itself
        pass


class RowReader:
    """Reads chosen rows of one array-like (``fill``); ``close`` when done."""

    def __init__(self, array):
        self.array = array
        # A memory map whose rows lie whole in its file is read with pread: touching scattered
        # rows through the mapping makes the kernel map the pages around each one as well
        # ("fault-around", 64 KiB), so a shuffled epoch brings the whole file into the process's
        # resident memory between two releases.
        self.file = _FileRows.open(array)
        # Other NumPy arrays take a list of rows at once; other stores read runs of rows as
        # slices (zarr's and h5py's row-list reads were slower: one selection per row).
        self.fancy = isinstance(array, np.ndarray)

    def read_sorted(self, rows):
        """The rows ``rows`` (increasing, distinct) as an array."""
        if self.file is not None:
            return self.file.read(rows)
        if self.fancy:
            return self.array[rows]
        # Runs of nearby rows, each read as one slice, then the wanted rows picked out.
        breaks = np.flatnonzero(np.diff(rows) > MERGE_GAP_ROWS) + 1
        parts = []
        for run in np.split(rows, breaks):
            first, last = int(run[0]), int(run[-1]) + 1
            slab = np.asarray(self.array[first:last])
            parts.append(slab if last - first == run.size else slab[run - first])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def fill(self, rows, out, convert):
        """``out[k] = convert(array[rows[k]])`` for every k, reading in increasing row order, a
        block of rows (``CHECK_BLOCK_BYTES``) at a time so that temporaries stay small."""
        if rows.size == 0:
            return
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        step = _block_rows(self.array)
        for first in range(0, rows.size, step):
            part = slice(first, first + step)
            out[order[part]] = convert(self.read_sorted(sorted_rows[part]))
            if self.file is None:  # pread leaves nothing mapped
                release(self.array)

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None


class _FileRows:
    """Rows of a ``numpy.memmap`` read from its file with ``os.preadv`` (Linux; ``open`` returns
    None wherever that cannot be done safely, and the mapping is read instead)."""

    def __init__(self, fd, first, stride, dtype, row_shape):
        self.fd, self.first, self.stride = fd, first, stride
        self.dtype, self.row_shape = dtype, row_shape
        self.row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize

    @classmethod
    def open(cls, array):
        if not isinstance(array, np.memmap) or not hasattr(os, "preadv") or array.ndim not in (1, 2) or array.size == 0:
            return None
        # A private ('c') mapping may hold changes that are not in the file.
        if getattr(array, "mode", None) not in ("r", "r+", "w+") or not isinstance(
            getattr(array, "filename", None), (str, os.PathLike)
        ):
            return None
        if array.ndim == 2 and array.strides[1] != array.dtype.itemsize:
            return None  # rows not contiguous
        mapping = _mmap_of(array)
        if mapping is None:
            return None
        try:
            address = np.frombuffer(mapping, dtype=np.uint8, count=1).ctypes.data
            fd = os.open(os.fspath(array.filename), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except (OSError, ValueError, TypeError):
            return None
        # The file at that path now must be the one mapped (not replaced since): same device and
        # inode as the mapping in /proc/self/maps.
        if _mapped_file(address) != _identity(os.fstat(fd)):
            os.close(fd)
            return None
        start = int(array.offset) - int(array.offset) % mmap.ALLOCATIONGRANULARITY  # numpy maps from here
        first = array.ctypes.data - address + start
        return cls(fd, first, int(array.strides[0]), array.dtype, tuple(array.shape[1:]))

    def read(self, rows):
        out = np.empty((rows.size,) + self.row_shape, dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        size, stride = self.row_bytes, self.stride
        if stride == size:  # consecutive rows are consecutive bytes: one read per run of rows
            starts = np.concatenate(([0], np.flatnonzero(np.diff(rows) != 1) + 1))
            lengths = np.diff(np.append(starts, rows.size))
        else:
            starts, lengths = np.arange(rows.size), np.ones(rows.size, dtype=np.int64)
        positions = rows[starts] * stride + self.first
        for k, count, position in zip(starts.tolist(), lengths.tolist(), positions.tolist()):
            if os.preadv(self.fd, [view[k * size : (k + count) * size]], position) != count * size:
                raise ValueError(f"short read from the memory-mapped file at byte {position}: was the file truncated?")
        return out

    def close(self):
        os.close(self.fd)


def _mmap_of(array):
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def _identity(stat):
    return os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino


def _mapped_file(address):
    """(major, minor, inode) of the file mapped at ``address`` (from /proc/self/maps), or None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                low, high = (int(part, 16) for part in fields[0].split("-"))
                if low <= address < high and len(fields) >= 5:
                    major, minor = (int(part, 16) for part in fields[3].split(":"))
                    return major, minor, int(fields[4])
    except (OSError, ValueError):
        pass
    return None


def block_shuffle_order(order, keys, n, block_rows, window_blocks, seed, epoch, shuffle_order):
    """Write into ``order[:n]`` the epoch's block-shuffled row order (see the module docstring).

    Blocks are ``[b·block_rows, (b+1)·block_rows)``; their order is ``shuffle_order`` over the
    block count keyed on (seed, epoch); the rows of window w (blocks ``w·window_blocks`` ... of
    that order) are permuted by ``shuffle_order`` keyed on (seed + (w + 1)·φ, epoch).
    """
    n_blocks = -(-n // block_rows)
    block_order, block_keys = np.empty(n_blocks, dtype=np.int64), np.empty(n_blocks, dtype=np.uint64)
    shuffle_order(block_order, block_keys, seed, epoch)
    position = 0
    golden = 0x9E3779B97F4A7C15
    for window, first in enumerate(range(0, n_blocks, window_blocks)):
        rows = np.concatenate(
            [
                np.arange(b * block_rows, min((b + 1) * block_rows, n))
                for b in block_order[first : first + window_blocks]
            ]
        )
        local, local_keys = order[position : position + rows.size], keys[position : position + rows.size]
        shuffle_order(local, local_keys, int((seed + (window + 1) * golden) % (1 << 63)), epoch)
        local[...] = rows[local]
        position += rows.size


class ChunkPlan:
    """How an epoch's order is cut into chunks of whole batches, and which positions of a chunk
    this process reads (data-parallel on replicated data: only its share of each batch)."""

    def __init__(self, batch, chunk_rows, rank=0, ranks=1, replicated_share=False):
        self.batch = int(batch)
        self.chunk_rows = max(self.batch, int(chunk_rows) // self.batch * self.batch)
        self.rank, self.ranks, self.share = rank, ranks, replicated_share

    def chunks(self, n):
        for start in range(0, n, self.chunk_rows):
            yield start, min(start + self.chunk_rows, n)

    def positions(self, rows):
        """Positions of a chunk of ``rows`` rows whose inputs and targets this process reads."""
        if not self.share:
            return np.arange(rows)
        parts = []
        for start in range(0, rows, self.batch):
            size = min(self.batch, rows - start)
            parts.append(
                np.arange(start + self.rank * size // self.ranks, start + (self.rank + 1) * size // self.ranks)
            )
        return np.concatenate(parts)


class ChunkLoader:
    """Fills chunk buffers (two, used in turn) from the readers, the next one in a helper thread."""

    def __init__(self, x_reader, y_reader, convert_x, convert_y, weight, n_in, n_out, dtype, chunk_rows, prefetch):
        self.readers = (x_reader, y_reader)
        self.converts = (convert_x, convert_y)
        self.weight = weight
        self.buffers = [
            (
                np.zeros((chunk_rows, n_in), dtype=dtype),
                np.zeros((chunk_rows, n_out), dtype=dtype),
                np.zeros(chunk_rows, dtype=dtype),
            )
            for _ in range(2 if prefetch else 1)
        ]
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fastgd-read") if prefetch else None
        self.turn = 0
        self.prefetching = prefetch

    def _load(self, buffers, rows, positions):
        x, y, w = buffers
        m = rows.size
        wanted = rows[positions]
        self.readers[0].fill(wanted, _Scatter(x, positions), self.converts[0])
        self.readers[1].fill(wanted, _Scatter(y, positions), self.converts[1])
        w[:m] = self.weight[rows]
        return x[:m], y[:m], w[:m]

    def start(self, rows, positions):
        """Begin loading a chunk (``rows``: its rows in order); ``result()`` of what this
        returns is the chunk's (X, Y, sample_weight) views."""
        buffers = self.buffers[self.turn]
        self.turn = (self.turn + 1) % len(self.buffers)
        if self.pool is None:
            future = concurrent.futures.Future()
            future.set_result(self._load(buffers, rows, positions))
            return future
        return self.pool.submit(self._load, buffers, rows, positions)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        for reader in self.readers:
            reader.close()


class _Scatter:
    # ``out[order] = values`` into the rows ``positions`` of a buffer.
    def __init__(self, buffer, positions):
        self.buffer, self.positions = buffer, positions

    def __setitem__(self, order, values):
        self.buffer[self.positions[order]] = values


def _check_source(array, name, ndims, n_cols=None):
    shape = tuple(int(s) for s in array.shape)
    if len(shape) not in ndims:
        raise ValueError(f"{name} must be {' or '.join(f'{d}-D' for d in ndims)}, got shape {shape}")
    if shape[0] == 0 or (len(shape) == 2 and shape[1] == 0):
        raise ValueError(f"{name} is empty: shape {shape}")
    if np.dtype(array.dtype).kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers (float, int or bool), got dtype {array.dtype}")
    if n_cols is not None and len(shape) == 2 and shape[1] != n_cols:
        raise ValueError(f"{name} has {shape[1]} columns; the network expects {n_cols}")
    return shape


def check_streamed(net, X, y, sample_weight):
    """Check streamed training data a block of rows at a time (nothing is held beyond a block).

    Returns
    -------
    (X, Y, weight, convert_x, convert_y)
        ``X`` and ``Y`` as given when streamed, else checked in-memory arrays; ``weight`` in
        memory (one value per row, normalised as ``Network.check_inputs`` does); the converters
        turn a block of read rows into the network's dtype (checking it again as it is read).
    """
    from . import _validation as check

    dtype, n_in, n_out = net.dtype, net.layer_sizes[0], net.layer_sizes[-1]

    def unchanged(block):
        return block

    if is_streamed(X):
        _check_source(X, "X", (2,), n_in)

        def convert_x(block):
            return check.as_matrix(block, "X", dtype, n_cols=n_in)

        for _, block in blocks_of(X):
            convert_x(block)
    else:
        X, convert_x = check.as_matrix(X, "X", dtype, n_cols=n_in), unchanged
    n = int(X.shape[0])
    if y is None:
        raise TypeError("y must be an array of targets, got None")
    if is_streamed(y):
        shape = _check_source(y, "y", (1, 2))
        if shape[0] != n:
            raise ValueError(f"y has {shape[0]} rows but X has {n}")

        def convert_y(block):
            return check.as_targets(block, "y", dtype, n_out, block.shape[0], net.loss_spec)

        for _, block in blocks_of(y):
            convert_y(block)
    else:
        y, convert_y = check.as_targets(y, "y", dtype, n_out, n, net.loss_spec), unchanged
    weight = check.as_sample_weight(None if sample_weight is None else np.asarray(sample_weight), dtype, n)
    if net.loss_spec.mean and sample_weight is not None:
        weight = (weight.astype(np.float64) / float(weight.max())).astype(dtype)
    return X, y, weight, convert_x, convert_y


def chunk_rows(options, batch, n_in, n_out, dtype) -> int:
    """Rows of a chunk: whole batches, about ``options.chunk_mb`` of inputs and targets."""
    row_bytes = (int(n_in) + int(n_out)) * np.dtype(dtype).itemsize
    fitting = int(options.chunk_mb * (1 << 20)) // row_bytes
    return max(int(batch), fitting // int(batch) * int(batch))


def abs_max(array) -> float:
    """``max |array|``, a block of rows at a time."""
    return max((float(np.abs(block).max()) for _, block in blocks_of(array)), default=0.0)
