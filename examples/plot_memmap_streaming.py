"""
Data larger than memory, from a memory map
==========================================

``fit`` streams a ``numpy.memmap`` (a zarr array, an HDF5 dataset, or any array-like with
``shape``, ``ndim``, ``dtype`` and row slices) in chunks instead of loading it: each chunk's
rows are read into a buffer while the compiled loop trains on the previous one. The epoch's row
order is drawn as for data in memory, so the trained parameters are bitwise those of the same
data in memory.

The file here is small, so that the documentation builds quickly; ``Streaming(chunk_mb=0.25)``
makes it many chunks, as a file of gigabytes would be with the default 64 MB chunks.
"""

import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

import fastgd

rows, n_in = 40_000, 32
folder = tempfile.mkdtemp(prefix="fastgd-example-")
X_path, y_path = os.path.join(folder, "X.npy"), os.path.join(folder, "y.npy")

# Write the data set to disk block by block, as a data set too big for memory would be.
rng = np.random.default_rng(0)
X_file = np.lib.format.open_memmap(X_path, mode="w+", dtype=np.float32, shape=(rows, n_in))
y_file = np.lib.format.open_memmap(y_path, mode="w+", dtype=np.int64, shape=(rows,))
direction = rng.standard_normal((n_in, 3))
for start in range(0, rows, 8_192):
    block = rng.standard_normal((min(8_192, rows - start), n_in)).astype(np.float32)
    X_file[start : start + len(block)] = block
    y_file[start : start + len(block)] = np.argmax(
        np.tanh(block @ direction) + 0.3 * rng.standard_normal((len(block), 3)), axis=1
    )
X_file.flush(), y_file.flush()
del X_file, y_file

# %%
# Open the files as memory maps and train: ``X`` and ``y`` are read a chunk at a time.

X = np.load(X_path, mmap_mode="r")
y = np.load(y_path, mmap_mode="r")
print(type(X).__name__, X.shape, X.dtype, f"{X.nbytes / 2**20:.1f} MB on disk")

seconds, histories = {}, {}
for label, data, extra in (
    ("streamed from the memory map", (X, y), dict(streaming=fastgd.Streaming(chunk_mb=0.25))),
    ("block shuffle (runs of rows)", (X, y), dict(streaming=fastgd.Streaming(chunk_mb=0.25), shuffle="blocks")),
    ("same data in memory", (np.array(X), np.array(y)), {}),
):
    net = fastgd.Network([n_in, 64, 3], activation="relu", loss="crossentropy", dtype="float32", random_state=0)
    # One short fit first, so that the times below are training, not compiling or loading kernels.
    net.copy().fit(data[0][:2048], data[1][:2048], optimizer=fastgd.Adam(lr=1e-3), batch_size=256, **extra)
    start = time.perf_counter()
    histories[label] = net.fit(*data, optimizer=fastgd.Adam(lr=1e-3), epochs=8, batch_size=256, **extra)
    seconds[label] = time.perf_counter() - start
    if label == "streamed from the memory map":
        streamed = net.flat_parameters.copy()
    elif label == "same data in memory":
        in_memory = net.flat_parameters.copy()
    print(f"{label:<30} {seconds[label]:.2f} s, final loss {histories[label].loss[-1]:.5f}")

print("streamed and in-memory parameters bitwise equal:", np.array_equal(streamed, in_memory))

# %%
# The loss curves of the memory map and of the same rows in memory lie on top of each other;
# the block shuffle visits the rows in another order (whole runs of consecutive rows per read,
# which a disk that seeks serves much faster) and trains as well.

figure, (loss_axis, time_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
for (label, history), style in zip(histories.items(), ("-", "-.", ":")):
    loss_axis.plot(np.arange(1, len(history.loss) + 1), history.loss, linestyle=style, linewidth=2, label=label)
loss_axis.set_xlabel("epoch")
loss_axis.set_ylabel("training loss")
loss_axis.legend(fontsize="small")
time_axis.barh(list(seconds), list(seconds.values()), color=["C0", "C1", "C2"])
time_axis.invert_yaxis()
time_axis.set_xlabel("seconds for 8 epochs (this build's machine)")
figure.tight_layout()

del X, y  # close the memory maps before the files go
for path in (X_path, y_path):
    os.remove(path)
os.rmdir(folder)
