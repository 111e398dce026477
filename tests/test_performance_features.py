"""The machinery behind the speed: which BLAS runs, the benchmark's workers, ahead-of-time
compilation. No timing is asserted here (speed targets live in ``python -m fastgd bench``)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from _helpers import RTOL, assert_close

import fastgd
from fastgd.bench import worker
from fastgd.kernels import activations, compat, layout, passes, team
from fastgd.kernels.losses import MSE

SUBPROCESS_TIMEOUT = 600


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpys_blas_is_called_and_agrees_with_the_fallback(dtype):
    sgemm, dgemm, _ = compat.cblas_gemm_addresses()
    if not (sgemm and dgemm):
        pytest.skip("this NumPy bundles no OpenBLAS; the kernels use SciPy's BLAS through Numba")
    rng = np.random.default_rng(0)
    meta = layout.make_meta((300, 400, 10), [activations.TANH, activations.SIGMOID])
    assert passes.configuration(meta, MSE, dtype)[4], "a network this size takes the BLAS path"
    params = (0.1 * rng.normal(size=layout.parameter_count(meta))).astype(dtype)
    x = rng.normal(size=(260, 300)).astype(dtype)
    outputs = []
    controls = (layout.make_control(), np.zeros(layout.CONTROL_WIDTH, np.int64))  # NumPy's BLAS, then SciPy's
    assert controls[0][layout.CONTROL_SGEMM] == sgemm and controls[0][layout.CONTROL_DGEMM] == dgemm
    for control in controls:
        evaluation = layout.make_evaluation(meta, 260, dtype)
        kernel = passes.forward_kernel(*passes.configuration(meta, MSE, dtype))
        args = (params, meta, x.reshape(-1), 260, evaluation.z_out, evaluation.z_out, evaluation.acts, evaluation.z_out,
                evaluation.deltas, evaluation.partials, evaluation.transposed, False)  # fmt: skip
        team.run_team(kernel, args, 2, control)
        outputs.append(layout.block_of(evaluation.acts, meta, 1, 260).copy())
    assert_close(outputs[0], outputs[1], dtype=dtype, rtol=RTOL[np.dtype(dtype)] * 10)
    reference = fastgd.reference.ACTIVATIONS[activations.SIGMOID](
        np.tanh(x.astype(np.float64) @ layout.layer_view(params, meta, 0) + layout.layer_view(params, meta, 0, False))
        @ layout.layer_view(params, meta, 1) + layout.layer_view(params, meta, 1, False)
    )
    assert_close(outputs[0], reference, dtype=dtype, rtol=RTOL[np.dtype(dtype)] * 10)


def test_the_bench_workers_train_the_same_thing():
    # Every library starts from fastgd's initial weights on the same data in the same order, so
    # fastgd's two backends (and any peer with the same loss) end at the same loss.
    fast = worker.measure("fastgd", "xor", 1)
    slow = worker.measure("fastgd-numpy", "xor", 1)
    assert fast["us_per_step"] > 0 and slow["us_per_step"] > 0
    assert fast["final_loss"] == pytest.approx(slow["final_loss"], rel=1e-9)
    peer = worker.measure("sklearn", "digits", 1)  # same loss definition (cross-entropy) and optimizer
    ours = worker.measure("fastgd", "digits", 1)
    assert peer["final_loss"] == pytest.approx(ours["final_loss"], rel=1e-3)


def test_bench_command_skips_missing_peers_with_a_note():
    done = subprocess.run([sys.executable, "-m", "fastgd", "bench", "xor", "--peers", "--repeats", "1"], capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for library in ("torch", "jax", "sklearn"):
        assert f"xor      {library}" in done.stdout or f"({library} skipped" in done.stdout
    assert "xor      fastgd " in done.stdout and "GFLOP/s" in done.stdout


def test_compile_command_fills_the_cache():
    env = dict(os.environ)
    done = subprocess.run([sys.executable, "-m", "fastgd", "compile", "--dtype", "float64", "--activation", "sigmoid",
                           "--output-activation", "sigmoid", "--loss", "sse"], capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "compiled 1 configurations x 6 optimizers" in done.stdout
