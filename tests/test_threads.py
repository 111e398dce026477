"""Threads: results do not depend on the thread count; settings are restored after each call."""

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastgd
from fastgd._config import PARALLEL_MIN_MACS

THREADS = sorted({1, numba.config.NUMBA_NUM_THREADS})


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
    # 300 x 300 x 512 multiply-adds per product: the parallel block path is taken.
    assert 300 * 300 * 512 >= PARALLEL_MIN_MACS
    nets = [train(n, dtype) for n in THREADS + [None]]
    for net in nets[1:]:
        np.testing.assert_array_equal(net.flat_parameters, nets[0].flat_parameters)
        np.testing.assert_array_equal(net.optimizer_state["exp_avg_sq"], nets[0].optimizer_state["exp_avg_sq"])


def test_thread_settings_are_restored():
    numba_before, blas_before = numba.get_num_threads(), blas_threads()
    net = train(1, "float32")
    net.predict(np.zeros((3, 300)))
    assert numba.get_num_threads() == numba_before
    assert blas_threads() == blas_before


def test_n_threads_is_checked():
    with pytest.raises(ValueError, match="n_threads must be between 1 and"):
        fastgd.Network([2, 1], n_threads=0)
    with pytest.raises(ValueError, match="n_threads must be between 1 and"):
        fastgd.Network([2, 1], n_threads=numba.config.NUMBA_NUM_THREADS + 1)
    with pytest.raises(TypeError, match="n_threads must be an int"):
        fastgd.Network([2, 1], n_threads=1.5)
