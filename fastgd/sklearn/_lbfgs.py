"""``solver="lbfgs"``: SciPy's L-BFGS-B on fastgd's compiled full-batch loss and gradient.

Each evaluation SciPy asks for is one compiled forward and backward pass over every row (a
block of rows at a time for sparse input, densified block by block), the penalty included as
scikit-learn defines it (``(alpha/2)·ΣW²`` divided by the total sample weight). The parameters
SciPy moves are the network's flat buffer in fastgd's layout (L-BFGS does not depend on the
order of the variables). No quasi-Newton code of fastgd's own.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.optimize
from sklearn.exceptions import ConvergenceWarning

from ..kernels import layout

# Sparse rows densified per block of a full-batch evaluation.
SPARSE_BLOCK_ROWS = 4096


class FullBatch:
    """The loss and gradient of ``net`` over all of ``(X, Y)`` (``X`` dense or a CSR matrix)
    with row weights ``sample_weight`` (None: ones), as SciPy's ``fun(x) -> (f, g)``."""

    def __init__(self, net, X, Y, sample_weight):
        self.net, self.X, self.sparse = net, X, not isinstance(X, np.ndarray)
        n = X.shape[0]
        weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        # Each row's share of the mean, as Network.row_scale: weight / Σweight.
        self.row_scale = (weight / weight.sum()).astype(net.dtype)
        self.Y = np.ascontiguousarray(Y, dtype=net.dtype)
        self.penalties = net.penalties(sample_weight, n)
        self.block = min(n, SPARSE_BLOCK_ROWS) if self.sparse else n
        self.buffers = layout.make_buffers(net.architecture, self.block, net.dtype)
        self.grads = np.zeros(net.n_params, dtype=net.dtype)
        self.block_grads = np.zeros(net.n_params, dtype=net.dtype) if self.sparse else None
        self.dense = None if not self.sparse else np.empty((self.block, X.shape[1]), dtype=net.dtype)
        self.X_dense = None if self.sparse else np.ascontiguousarray(X, dtype=net.dtype)
        self.calls = 0

    def __call__(self, x):
        net = self.net
        params = net.flat_parameters
        params[...] = x  # (cast to the network's dtype)
        self.calls += 1
        engine, architecture, code = net.engine, net.architecture, net.loss_code
        threads = net.team(self.block)
        with net.compiled_call(threads):
            if not self.sparse:
                value = engine.forward_backward(
                    params,
                    self.grads,
                    architecture,
                    self.X_dense,
                    self.Y,
                    self.row_scale,
                    self.buffers,
                    code,
                    *self.penalties,
                    threads,
                    parameter=net.loss_parameter,
                )
                return float(value), self.grads.astype(np.float64)
            value, total = 0.0, np.zeros(net.n_params)
            for start in range(0, self.X.shape[0], self.block):
                stop = min(start + self.block, self.X.shape[0])
                rows = self.dense[: stop - start]
                rows[...] = self.X[start:stop].toarray()
                # The penalty once, with the first block.
                penalties = self.penalties if start == 0 else (0.0, 0.0)
                value += engine.forward_backward(
                    params,
                    self.block_grads,
                    architecture,
                    rows,
                    self.Y[start:stop],
                    self.row_scale[start:stop],
                    self.buffers,
                    code,
                    *penalties,
                    net.team(stop - start),
                    parameter=net.loss_parameter,
                )
                total += self.block_grads
            return float(value), total


def minimize(net, X, Y, sample_weight, max_iter, max_fun, tol):
    """Train ``net`` by L-BFGS-B from its current parameters, as scikit-learn's ``_fit_lbfgs``:
    at most ``max_iter`` iterations and ``max_fun`` evaluations, stopping when the largest
    gradient entry is at most ``tol``; warns ConvergenceWarning as scikit-learn does when SciPy
    stops for another reason. Returns ``(n_iter, loss)``."""
    objective = FullBatch(net, X, Y, sample_weight)
    x0 = net.flat_parameters.astype(np.float64)
    result = scipy.optimize.minimize(
        objective, x0, method="L-BFGS-B", jac=True, options={"maxfun": max_fun, "maxiter": max_iter, "gtol": tol}
    )
    net.flat_parameters[...] = result.x
    n_iter = min(int(result.nit), max_iter)
    if result.status != 0:
        message = result.message.decode("latin1") if isinstance(result.message, bytes) else result.message
        # scikit-learn's words (sklearn.utils.optimize._check_optimize_result).
        warnings.warn(
            f"lbfgs failed to converge after {n_iter} iteration(s) (status={result.status}):\n{message}.\n\n"
            f"Increase the number of iterations to improve the convergence (max_iter={max_iter}).\n"
            "You might also want to scale the data as shown in:\n"
            "    https://scikit-learn.org/stable/modules/preprocessing.html",
            ConvergenceWarning,
            stacklevel=4,
        )
    return n_iter, float(result.fun)
