"""The machinery behind the speed: which BLAS runs, the benchmark's workers, ahead-of-time
compilation. No timing is asserted here (speed targets live in ``python -m fastgd bench``)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from _helpers import RTOL, assert_close, paths

import fastgd
from fastgd.bench import worker
from fastgd.kernels import activations, layout, network
from fastgd.kernels.losses import MSE

SUBPROCESS_TIMEOUT = 600


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_blas_path_agrees_with_the_compiled_paths_and_numpy(dtype):
    # 300-400-10: a network that calls SciPy's BLAS for its large products; the same network
    # with BLAS ruled out (every product on the compiled paths) must give the same outputs and
    # gradients, both equal to NumPy's float64 forward pass.
    rng = np.random.default_rng(0)
    architecture = layout.make_architecture((300, 400, 10), [activations.TANH, activations.SIGMOID])
    assert architecture.blas and "blas" in paths(architecture, dtype, 260), "a network this size takes the BLAS path"
    compiled_only = architecture._replace(blas=False)
    params = (0.1 * rng.normal(size=architecture.n_params)).astype(dtype)
    x = rng.normal(size=(260, 300)).astype(dtype)
    y = rng.uniform(size=(260, 10)).astype(dtype)
    row_scale = np.full(260, 1.0 / 260, dtype)
    outputs, gradients = [], []
    for chosen in (architecture, compiled_only):
        buffers = layout.make_buffers(chosen, 260, dtype)
        grads = np.zeros_like(params)
        network.forward_backward(params, grads, chosen, x, y, row_scale, buffers, MSE, 0.0, 0.0, n_threads=2)
        outputs.append(layout.block_of(buffers.acts, chosen, 1, 260).copy())
        gradients.append(grads)
    assert_close(outputs[0], outputs[1], dtype=dtype, rtol=RTOL[np.dtype(dtype)] * 10)
    assert_close(gradients[0], gradients[1], dtype=dtype, rtol=RTOL[np.dtype(dtype)] * 10)
    reference = fastgd.reference.ACTIVATIONS[activations.SIGMOID](
        np.tanh(
            x.astype(np.float64) @ layout.layer_view(params, architecture, 0)
            + layout.layer_view(params, architecture, 0, False)
        )
        @ layout.layer_view(params, architecture, 1)
        + layout.layer_view(params, architecture, 1, False)
    )
    assert_close(outputs[0], reference, dtype=dtype, rtol=RTOL[np.dtype(dtype)] * 10)


def test_the_bench_workers_train_the_same_thing():
    # Every library starts from fastgd's initial weights on the same data in the same order, so
    # fastgd's two backends (and any peer with the same loss) end at the same loss.
    fast = worker.measure("fastgd", "xor", 1)
    slow = worker.measure("fastgd-numpy", "xor", 1)
    assert fast["us_per_step"] > 0 and slow["us_per_step"] > 0
    assert fast["final_loss"] == pytest.approx(slow["final_loss"], rel=1e-9)
    tracked = worker.measure("fastgd-track", "xor", 1)  # recording gradient health changes no step
    assert tracked["final_loss"] == fast["final_loss"]
    peer = worker.measure("sklearn", "digits", 1)  # same loss definition (cross-entropy) and optimizer
    ours = worker.measure("fastgd", "digits", 1)
    assert peer["final_loss"] == pytest.approx(ours["final_loss"], rel=1e-3)


def test_bench_ranks_runs_the_same_training_on_two_ranks():
    # `bench --ranks 2`: one rank, one rank with two threads, two ranks (mpiexec) train the same
    # steps; two ranks sum each gradient as two shards, so the losses agree to float32 rounding.
    pytest.importorskip("mpi4py")
    import shutil

    from fastgd.bench import ranks

    if not (shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")):
        pytest.skip("no mpiexec (pip install 'fastgd[mpi]')")
    rows = ranks(["small"], n_ranks=2, repeats=1, out=open(os.devnull, "w"))
    assert [row["configuration"] for row in rows] == ["1 rank x 1 thread", "1 rank x 2 threads", "2 ranks x 1 thread"]
    single, _, two = rows
    assert two["ranks"] == 2 and two["exchange_seconds"] > 0 and two["gradient_bytes"] == (32 * 64 + 64 + 64 + 1) * 4
    assert two["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)


def test_out_of_core_bench_streams_the_same_training_as_in_memory():
    from fastgd.bench import out_of_core

    result = out_of_core(budget_mb=2, factor=4, repeats=1, out=open(os.devnull, "w"))
    assert set(result) == {"stream", "cold", "blocks", "memory"}
    assert result["stream"]["rows"] == 8 * (1 << 20) // (794 * 4) // 256 * 256
    # Streamed rows in the epoch's shuffled order train bitwise as the same rows in memory.
    assert result["stream"]["final_loss"] == result["cold"]["final_loss"] == result["memory"]["final_loss"]
    assert result["blocks"]["final_loss"] != result["memory"]["final_loss"]  # another order
    assert all(run["peak_rss_mb"] > 0 and run["seconds"] > 0 for run in result.values())


def test_bench_command_skips_missing_peers_with_a_note():
    done = subprocess.run(
        [sys.executable, "-m", "fastgd", "bench", "xor", "--peers", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    for library in ("torch", "jax", "sklearn"):
        assert f"xor      {library}" in done.stdout or f"({library} skipped" in done.stdout
    assert "xor      fastgd " in done.stdout and "GFLOP/s" in done.stdout


def test_exchange_cost_command_times_both_sums():
    pytest.importorskip("mpi4py")
    import shutil

    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install 'fastgd[mpi]')")
    done = subprocess.run(
        [mpiexec, "-n", "2", sys.executable, "-m", "mpi4py", "-m", "fastgd.bench.exchange", "1000", "5000"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if len(line.split()) == 4 and line.split()[0].isdigit()]
    assert [int(row[0]) for row in rows] == [1000, 5000]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)
