"""Out-of-core training (``fastgd.streaming``): memory maps, zarr, HDF5 and other array-likes
streamed in chunks train exactly as the same data in memory; checks read a block at a time."""

import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastgd
from fastgd import _validation as check
from fastgd.kernels import shuffle_order
from fastgd.streaming import Streaming, block_shuffle_order, is_streamed
from fastgd.training.driver import DivergenceError

ROWS = 3001  # batches of 64: a short last batch; chunks of a few batches: a short last chunk
TINY_CHUNKS = Streaming(chunk_mb=0.02)  # 256 rows of 12 + 3 float32 columns: 4 batches a chunk


def data(rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    X = rng.normal(size=(ROWS, 12)).astype(np.float32)
    labels = (X[:, :3] @ rng.normal(size=(3, 3))).argmax(axis=1)
    weight = rng.integers(1, 5, size=ROWS) / 4.0
    return X, labels, weight


def memmap_of(array, path, mode="r"):
    writer = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    writer[...] = array
    writer.flush()
    del writer
    return np.load(path, mmap_mode=mode)


def network(dtype="float32", backend="numba"):
    return fastgd.Network(
        [12, 16, 3],
        activation="tanh",
        output_activation="softmax",
        loss="crossentropy",
        dtype=dtype,
        random_state=3,
        backend=backend,
        l2=1e-4,
    )


class RowsOnly:
    """An array-like that only knows slices of rows (no row lists): the most a store may offer."""

    def __init__(self, array):
        self.array, self.shape, self.ndim, self.dtype = array, array.shape, array.ndim, array.dtype
        self.reads = 0

    def __getitem__(self, key):
        if not isinstance(key, slice):
            raise TypeError(f"RowsOnly takes slices of rows, got {type(key).__name__}")
        self.reads += 1
        return self.array[key].copy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_memory_map_trains_bitwise_as_in_memory(tmp_path, dtype, backend, optimizer):
    X, labels, weight = data()
    in_memory = network(dtype, backend)
    in_memory.fit(X, labels, optimizer=optimizer, epochs=3, batch_size=64, sample_weight=weight)
    streamed = network(dtype, backend)
    X_map, y_map = memmap_of(X, tmp_path / "X.npy"), memmap_of(labels, tmp_path / "y.npy")
    streamed.fit(
        X_map, y_map, optimizer=optimizer, epochs=3, batch_size=64, sample_weight=weight, streaming=TINY_CHUNKS
    )
    assert np.array_equal(streamed.flat_parameters, in_memory.flat_parameters)
    assert np.array_equal(streamed.train_state().opt_state, in_memory.train_state().opt_state)
    assert streamed.epochs_trained == in_memory.epochs_trained == 3
    # The epoch loss is summed chunk by chunk: equal to rounding.
    np.testing.assert_allclose(streamed.history.loss, in_memory.history.loss, rtol=1e-12)


@pytest.mark.parametrize("store", ["zarr", "h5py", "rows-only"])
def test_stores_train_bitwise_as_in_memory(tmp_path, store):
    X, labels, weight = data(1)
    if store == "zarr":
        zarr = pytest.importorskip("zarr")
        X_store = zarr.open_array(str(tmp_path / "X.zarr"), mode="w", shape=X.shape, chunks=(500, 12), dtype=X.dtype)
        X_store[...] = X
        y_store = zarr.open_array(
            str(tmp_path / "y.zarr"), mode="w", shape=labels.shape, chunks=(500,), dtype=labels.dtype
        )
        y_store[...] = labels
    elif store == "h5py":
        h5py = pytest.importorskip("h5py")
        with h5py.File(tmp_path / "data.h5", "w") as file:
            file["X"], file["y"] = X, labels
        handle = h5py.File(tmp_path / "data.h5", "r")
        X_store, y_store = handle["X"], handle["y"]
    else:
        X_store, y_store = RowsOnly(X), RowsOnly(labels)
    assert is_streamed(X_store) and is_streamed(y_store)
    in_memory = network()
    in_memory.fit(X, labels, optimizer="adam", epochs=2, batch_size=64, sample_weight=weight, grad_shards=2)
    streamed = network()
    streamed.fit(
        X_store,
        y_store,
        optimizer="adam",
        epochs=2,
        batch_size=64,
        sample_weight=weight,
        grad_shards=2,
        streaming=TINY_CHUNKS,
    )
    assert np.array_equal(streamed.flat_parameters, in_memory.flat_parameters)


def test_in_memory_data_streams_when_asked():
    X, labels, _ = data()
    a, b = network(), network()
    a.fit(X, labels, optimizer="momentum", epochs=2, batch_size=100)
    b.fit(X, labels, optimizer="momentum", epochs=2, batch_size=100, streaming=Streaming(chunk_mb=0.01, prefetch=False))
    assert np.array_equal(a.flat_parameters, b.flat_parameters)


def test_what_is_streamed():
    pd = pytest.importorskip("pandas")
    X = np.zeros((3, 2))
    assert not is_streamed(X) and not is_streamed([[1.0, 2.0]]) and not is_streamed(None)
    assert not is_streamed(pd.DataFrame(X)) and not is_streamed(pd.Series([1.0, 2.0]))  # label-indexed: converted whole
    assert is_streamed(RowsOnly(X))


def test_block_shuffle_is_a_permutation_of_blocks_shuffled_within_windows():
    n, block, window = 1000, 37, 4  # 28 blocks, the last one of 1 row; 7 windows

    def block_size(b):
        return min(block, n - b * block)

    order, keys = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.uint64)
    orders = []
    for epoch in (0, 1):
        block_shuffle_order(order, keys, n, block, window, seed=11, epoch=epoch, shuffle_order=shuffle_order)
        assert np.array_equal(np.sort(order), np.arange(n))  # every row once
        # Cut the order into windows: a window ends where the rows seen so far are exactly
        # ``window`` whole blocks (or the data ends).
        start, windows = 0, 0
        while start < n:
            seen, stop = set(), start
            while stop < n:
                seen.add(int(order[stop]) // block)
                stop += 1
                if stop - start == sum(map(block_size, seen)) and (len(seen) == window or stop == n):
                    break
            assert len(seen) <= window
            assert set(order[start:stop].tolist()) == set().union(
                *(range(b * block, b * block + block_size(b)) for b in seen)
            )
            start, windows = stop, windows + 1
        assert windows == 7
        orders.append(order.copy())
    assert not np.array_equal(orders[0], orders[1])  # a fresh order each epoch
    again = np.empty(n, dtype=np.int64)
    block_shuffle_order(again, keys, n, block, window, seed=11, epoch=1, shuffle_order=shuffle_order)
    assert np.array_equal(again, orders[1])  # keyed on (seed, epoch) only
    first_block = orders[1][: block_size(int(orders[1][0]) // block)]
    assert not np.array_equal(first_block, np.sort(first_block))  # rows are shuffled within windows


def test_block_shuffle_trains_and_is_reproducible(tmp_path):
    X, labels, _ = data()
    X_map = memmap_of(X, tmp_path / "X.npy")
    a, b = network(), network()
    for net in (a, b):
        net.fit(X_map, labels, optimizer="adam", epochs=4, batch_size=64, shuffle="blocks", streaming=TINY_CHUNKS)
    assert np.array_equal(a.flat_parameters, b.flat_parameters)
    assert a.history.loss[-1] < 0.8 * a.history.loss[0]


def test_bad_rows_are_found_before_training_and_change_nothing(tmp_path):
    X, labels, _ = data()
    X[-1, 5] = np.nan  # in the last block read
    X_map = memmap_of(X, tmp_path / "X.npy")
    net = network()
    before = net.state_dict()
    with pytest.raises(ValueError, match="X contains NaN"):
        net.fit(X_map, labels, epochs=1, batch_size=64)
    assert np.array_equal(net.flat_parameters, before["parameters"]) and net.epochs_trained == 0
    bad_labels = labels.copy()
    bad_labels[-1] = 7
    with pytest.raises(ValueError, match="labels outside 0..2"):
        net.fit(memmap_of(data()[0], tmp_path / "X2.npy"), memmap_of(bad_labels, tmp_path / "y.npy"), epochs=1)
    with pytest.raises(ValueError, match="validation_split needs in-memory data"):
        net.fit(memmap_of(data()[0], tmp_path / "X3.npy"), labels, epochs=1, validation_split=0.2)
    with pytest.raises(ValueError, match="shuffle must be True, False or 'blocks'"):
        net.fit(data()[0], labels, shuffle="rows")
    with pytest.raises(TypeError, match="streaming must be a fastgd.streaming.Streaming"):
        net.fit(data()[0], labels, streaming={"chunk_mb": 1})
    with pytest.raises(ValueError, match="chunk_mb must be a number > 0"):
        Streaming(chunk_mb=0)
    assert np.array_equal(net.flat_parameters, before["parameters"]) and net.epochs_trained == 0


def test_checks_read_a_block_at_a_time(tmp_path):
    # 64 MB of float32: a whole-array isfinite would allocate 16 MB of bools, a float64
    # conversion 128 MB; block by block the checks stay within a few blocks (8 MB each).
    rows, cols = 1 << 16, 256
    path = tmp_path / "big.npy"
    writer = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, cols))
    writer[...] = 1.0
    writer.flush()
    del writer
    X_map = np.load(path, mmap_mode="r")
    net = fastgd.Network([cols, 2, 1], loss="mse", dtype="float64", random_state=0)
    tracemalloc.start()
    fastgd.streaming.check_streamed(net, X_map, np.zeros(rows), None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 << 20, f"checking a 64 MB memory map held {peak / 2**20:.1f} MB at once"
    # In memory, the finiteness check is blockwise too.
    in_memory = np.ones((rows, cols), dtype=np.float32)
    tracemalloc.start()
    check.as_matrix(in_memory, "X", np.float32)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, f"checking a 64 MB array held {peak / 2**20:.1f} MB at once"


def test_divergence_while_streaming_puts_back_the_last_finite_epoch(tmp_path):
    # The rows from 1500 on are 100 times larger: the second fit diverges in a late chunk of
    # its first epoch, after several chunks were trained; the network must go back to where
    # the epoch started, as in memory.
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2000, 6))
    X[1500:] *= 100
    y = rng.normal(size=(2000, 2))
    X_map = memmap_of(X, tmp_path / "X.npy")
    outcomes = []
    for inputs, streaming in ((X, None), (X_map, Streaming(chunk_mb=0.01))):
        net = fastgd.Network([6, 9, 2], activation="identity", loss="mse", random_state=7)
        net.fit(inputs[:1500], y[:1500], optimizer=fastgd.SGD(lr=0.01), epochs=1, batch_size=20, shuffle=False)
        after_first = net.flat_parameters.copy()
        with pytest.raises(DivergenceError) as caught:
            net.fit(inputs, y, epochs=3, batch_size=20, shuffle=False, streaming=streaming)
        assert caught.value.epoch == 1 and net.epochs_trained == 1
        assert np.array_equal(net.flat_parameters, after_first)
        outcomes.append((net.flat_parameters.copy(), int(net.train_state().step[0])))
    assert np.array_equal(outcomes[0][0], outcomes[1][0]) and outcomes[0][1] == outcomes[1][1] == 75


RSS_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import fastgd
    from fastgd.streaming import Streaming

    def status(field):  # kB
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) for line in lines if line.startswith(field + ":"))

    X = np.load(sys.argv[1], mmap_mode="r")
    y = np.zeros((X.shape[0], 1), dtype=np.float32)
    net = fastgd.Network([X.shape[1], 8, 1], loss="mse", dtype="float32", random_state=0)
    net.fit(X[:256], y[:256], epochs=1, batch_size=256, streaming=Streaming(chunk_mb=4))  # compile
    try:  # start the peak (VmHWM) afresh, so that it is the fit's, not the compiler's
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        print("no-reset"); sys.exit(0)
    before = status("VmRSS")
    net.fit(X, y, epochs=1, batch_size=256, streaming=Streaming(chunk_mb=4))
    print(before, status("VmHWM"))
    """
)


def test_streaming_a_memory_map_keeps_resident_memory_bounded(tmp_path):
    # 256 MB on disk, rows of 784 float32 (not page-aligned), 4 MB chunks, rows shuffled: the
    # fit may add the two chunks, the order, the weights and a block's temporaries (~20 MB),
    # not the file. (Read through the mapping, the kernel maps 64 KiB around each scattered row:
    # the fit grew by 260 MB, the whole file.) Measured: 24 MB.
    rows, cols = 85_000, 784
    path = tmp_path / "big.npy"
    writer = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, cols))
    for start in range(0, rows, 4096):
        writer[start : start + 4096] = np.float32(0.5)  # rows, cols are written (not sparse)
    writer.flush()
    del writer
    done = subprocess.run([sys.executable, "-c", RSS_CHILD, str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    if done.stdout.split()[-1] == "no-reset":
        pytest.skip("this kernel cannot reset a process's peak resident memory (/proc/self/clear_refs)")
    before, after = (int(v) for v in done.stdout.split()[-2:])  # kB
    grown_mb = (after - before) / 1024
    assert grown_mb < 40, f"streaming a 256 MB memory map grew the peak resident memory by {grown_mb:.0f} MB"
    os.remove(path)


def test_memory_maps_are_read_from_their_file_row_for_row(tmp_path):
    from fastgd.streaming import RowReader

    rng = np.random.default_rng(5)
    path = tmp_path / "rows.f64"
    values = rng.normal(size=(500, 7))
    with open(path, "wb") as handle:
        handle.write(b"x" * 1000 + values.tobytes())  # data after an offset that is not a page multiple
    mapped = np.memmap(path, dtype=np.float64, mode="r", offset=1000, shape=(500, 7))
    picks = np.array([0, 1, 2, 3, 9, 10, 11, 200, 498, 499])  # runs and single rows
    for array, expected in (
        (mapped, values),
        (mapped[5:400:3], values[5:400:3]),
        (mapped[::-1], values[::-1]),
        (mapped[:, 2], values[:, 2]),
    ):
        reader = RowReader(array)
        wanted = picks[picks < array.shape[0]]
        assert np.array_equal(reader.read_sorted(wanted), expected[wanted])
        reader.close()
    assert RowReader(mapped).file is not None and RowReader(mapped[:, 2]).file is not None
    # Rows that are not contiguous bytes are read through the mapping.
    gapped = RowReader(mapped[:, ::2])
    assert gapped.file is None and np.array_equal(gapped.read_sorted(picks), values[picks, ::2])
    # The path now names another file: the mapping (the data the user holds) is read, not the path.
    os.replace(tmp_path / "rows.f64", tmp_path / "old.f64")
    with open(path, "wb") as handle:
        handle.write(b"x" * 1000 + np.zeros_like(values).tobytes())
    reader = RowReader(mapped)
    assert reader.file is None and np.array_equal(reader.read_sorted(picks), values[picks])


class ChangesAfterChecks(RowsOnly):
    """A store whose rows turn to NaN after the checks have read them (the file changed on disk
    while training)."""

    def __init__(self, array, good_reads):
        super().__init__(array)
        self.good_reads = good_reads

    def __getitem__(self, key):
        rows = super().__getitem__(key)
        if self.reads > self.good_reads:
            rows[...] = np.nan
        return rows


def test_a_chunk_that_fails_its_checks_undoes_the_epoch():
    X, labels, weight = data()
    net = network()
    net.fit(X, labels, epochs=1, batch_size=64, optimizer="adam")
    before = (
        net.flat_parameters.copy(),
        {k: v.copy() for k, v in net.optimizer_state.items()},
        net.optimizer_steps,
        net.epochs_trained,
        list(net.history.loss),
    )
    store = ChangesAfterChecks(X, good_reads=3)  # the checks' read, then two chunks (one run each)
    with pytest.raises(ValueError, match="X .*(NaN|finite)"):
        net.fit(store, labels, epochs=2, batch_size=64, shuffle=False, optimizer=None, streaming=TINY_CHUNKS)
    # Read 4 is the third chunk: the first two had trained when it failed.
    assert store.reads == 4, "the failure came from a chunk after the first two, not from the checks"
    assert np.array_equal(net.flat_parameters, before[0])
    assert all(np.array_equal(net.optimizer_state[k], v) for k, v in before[1].items())
    assert (net.optimizer_steps, net.epochs_trained, list(net.history.loss)) == before[2:]
