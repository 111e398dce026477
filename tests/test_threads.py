"""Threads: results do not depend on the thread count; settings are restored after each call."""

import threading

import numpy as np
import pytest
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
    blas_before, threads_before = blas_threads(), threading.active_count()
    net = train(None, "float32")
    net.predict(np.zeros((3, 300)))
    assert blas_threads() == blas_before
    # The team's threads stay up between calls (fastgd.kernels.team), and nothing else does.
    extra = [thread for thread in threading.enumerate() if thread.name.startswith("fastgd-")]
    assert threading.active_count() <= threads_before + len(extra) <= threads_before + usable_cores() - 1


def test_n_threads_is_checked():
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        fastgd.Network([2, 1], n_threads=0)
    with pytest.raises(TypeError, match="n_threads must be an int"):
        fastgd.Network([2, 1], n_threads=1.5)
    # More threads than cores is accepted (a model saved on a bigger machine loads anywhere);
    # the team is capped at the usable cores.
    assert fastgd.Network([2, 1], n_threads=10_000).n_threads == 10_000
