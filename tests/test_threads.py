"""Threads: results do not depend on the thread count; settings are restored after each call."""

import threading

import numpy as np
import pytest
from _helpers import paths
from threadpoolctl import threadpool_info

import fastgd
from fastgd._threads import usable_cores
from fastgd.kernels.layout import TEAM_MIN_MACS

THREADS = sorted({1, usable_cores()})


def blas_threads():
    return sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})


def train(n_threads, dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 300))
    y = rng.integers(0, 10, size=600)
    net = fastgd.Network([300, 512, 256, 10], loss="crossentropy", dtype=dtype, random_state=3, n_threads=n_threads)
    net.fit(X, y, optimizer=fastgd.Adam(1e-3), epochs=2, batch_size=300)
    return net


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_are_bitwise_identical_on_any_thread_count(dtype):
    # A step of 300 rows x (300*512 + 512*256 + 256*10) multiply-adds runs on a team of threads,
    # its products split in blocks.
    assert 300 * (300 * 512 + 512 * 256 + 256 * 10) >= TEAM_MIN_MACS
    nets = [train(n, dtype) for n in THREADS + [None, 64]]
    for net in nets[1:]:
        np.testing.assert_array_equal(net.flat_parameters, nets[0].flat_parameters)
        np.testing.assert_array_equal(net.optimizer_state["exp_avg_sq"], nets[0].optimizer_state["exp_avg_sq"])


def test_thread_settings_are_restored_and_only_the_parked_team_stays():
    from fastgd.kernels import team

    team.close_idle_teams()
    blas_before, threads_before = blas_threads(), threading.active_count()
    net = train(None, "float32")
    net.predict(np.zeros((3, 300)))
    assert blas_threads() == blas_before
    # The team's threads stay up between calls (fastgd.kernels.team), and nothing else does.
    extra = [thread for thread in threading.enumerate() if thread.name.startswith("fastgd-")]
    assert threading.active_count() <= threads_before + len(extra) <= threads_before + usable_cores() - 1


def test_blas_is_held_to_one_thread_in_fits_from_any_python_thread():
    # OpenBLAS's own threads sum in another order, so a fit whose BLAS ran on two threads ended
    # apart from the same fit on one. threadpoolctl 3.8 ignores a limit set from a Python thread
    # other than the one that set one first: after a fit in the main thread, a fit in another
    # thread ran with BLAS on every core (and, two at once, the first to end put BLAS back while
    # the other ran).
    seen = []

    def probe(epoch, history, network):
        seen.append(tuple(blas_threads()))

    def fit(seed):
        rng = np.random.default_rng(seed)
        X, Y = rng.normal(size=(512, 128)).astype(np.float32), rng.uniform(size=(512, 64)).astype(np.float32)
        net = fastgd.Network([128, 256, 64], dtype="float32", random_state=seed)
        assert net.architecture.blas
        net.fit(X, Y, optimizer=fastgd.Adam(lr=1e-3), epochs=3, batch_size=256, callbacks=[probe])
        return net.flat_parameters

    before = blas_threads()
    expected = [fit(1), fit(2)]  # the main thread sets BLAS's threads first
    results = [None, None]
    workers = [threading.Thread(target=lambda i=i: results.__setitem__(i, fit(i + 1))) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    assert set(seen) == {(1,)}, seen
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
    assert blas_threads() == before


def test_n_threads_is_checked():
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        fastgd.Network([2, 1], n_threads=0)
    with pytest.raises(TypeError, match="n_threads must be an int"):
        fastgd.Network([2, 1], n_threads=1.5)
    # More threads than cores is accepted (a model saved on a bigger machine loads anywhere);
    # the team is capped at the usable cores.
    assert fastgd.Network([2, 1], n_threads=10_000).n_threads == 10_000


def test_a_network_that_never_calls_blas_splits_its_products_among_threads():
    # scikit-learn's default batch (200) of the grid search's 64-100-10 network: 1.48 M
    # multiply-adds a step, and no weight matrix of BLAS_MIN_WEIGHTS elements, so no product goes
    # to BLAS. Its products are split in blocks of MIN_BLOCK_ROWS (16) rows, the team's size: once
    # the 128-row blocks meant for BLAS made each of its big products one block, for one thread.
    from fastgd.kernels import layout

    def loss_blocks(architecture, rows):
        return layout.layer_blocks(architecture, len(architecture.layers) - 1, rows)

    small = fastgd.Network([64, 100, 10], loss="crossentropy").architecture
    assert "blas" not in paths(small, np.float64, 200)
    assert layout.useful_threads(small, 200, 1, False, 2) == 2
    assert loss_blocks(small, 200) == 200 // 16  # 200 x 100 x 10 multiply-adds: 12 blocks of rows
    assert layout.weight_blocks(small, 0, 200) == 64 // 16  # Aᵀδ: 64 rows of 200 x 100
    # A network with a BLAS-sized layer keeps BLAS's large blocks for its BLAS products
    # (MIN_BLOCK_ROWS_BLAS_WEIGHTS = 512 rows of a weight gradient, but at least BLAS_TEAM_BLOCKS
    # = 2 blocks of 64 rows or more, for the team: its 300 rows, one per input, make two), and
    # 16-row blocks (at most MAX_BLOCKS) for its others.
    big = fastgd.Network([300, 512, 10], loss="crossentropy").architecture
    assert "blas" in paths(big, np.float64, 300)
    assert (layout.MIN_BLOCK_ROWS_BLAS_WEIGHTS, layout.BLAS_TEAM_BLOCKS, layout.MIN_BLOCK_ROWS_BLAS_TEAM) == (
        512,
        2,
        64,
    )
    assert layout.weight_blocks(big, 0, 300) == 2  # 300 x 512 x 300 multiply-adds
    assert layout.block_count(100, 1 << 20, True, 512) == 1  # (100 rows: one block, under two of 64)
    assert layout.block_count(4096, 2048, True) == 4096 // layout.MIN_BLOCK_ROWS_BLAS == 4  # tall: blocks of 1024 rows
    # 300 x 512 x 10: 1.5 M multiply-adds, but 10 outputs, a side under BLAS_MIN_SIDE (128):
    # the micro-kernel, in 16-row blocks (300 // 16 = 18, capped at MAX_BLOCKS).
    assert loss_blocks(big, 300) == layout.MAX_BLOCKS == 16
    narrow = fastgd.Network([300, 512, 2], loss="crossentropy").architecture
    assert loss_blocks(narrow, 300) == 16  # 300 x 512 x 2: 0.3 M, below BLAS_MIN_MACS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_small_weights_network_is_bitwise_identical_on_any_thread_count(dtype):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(450, 64))
    y = rng.integers(0, 10, size=450)
    nets = []
    for n_threads in THREADS + [None, 7]:
        net = fastgd.Network(
            [64, 100, 10], activation="relu", loss="crossentropy", dtype=dtype, random_state=2, n_threads=n_threads
        )
        history = net.fit(X, y, optimizer=fastgd.Adam(1e-3), epochs=3, batch_size=200, validation_split=0.2)
        nets.append((net, history))
    for net, history in nets[1:]:
        np.testing.assert_array_equal(net.flat_parameters, nets[0][0].flat_parameters)
        np.testing.assert_array_equal(history.loss, nets[0][1].loss)
        np.testing.assert_array_equal(history.val_loss, nets[0][1].val_loss)
