"""Forward and backward pass for networks whose every matrix product is tiny (XOR-sized).

When each product of a batch has fewer than ``BLAS_MIN_MACS`` multiply-adds, the cost of a step
is not arithmetic but overhead: array views (each one reference-counted), calls between kernels,
BLAS dispatch. ``forward_backward_small`` does the whole pass in one function of plain loops over
the flat buffers, with no views in its loops; it computes exactly what ``forward_backward`` does
(same contract and buffers, and the same NumPy twin, ``fastgd.reference.forward_backward``).
"""

from numba import njit

from .._config import BLAS_MIN_MACS, JIT_OPTIONS
from .codes import (
    LEAKY_RELU,
    LEAKY_SLOPE,
    META_N_IN,
    META_N_OUT,
    RELU,
    SIGMOID,
    SOFTMAX,
    TANH,
)
from .dense import loss_value, output_delta
from .mathfn import fast_exp, fast_tanh


@njit(**JIT_OPTIONS)
def is_small(meta, rows):
    """True when every product of a ``rows``-row batch is below ``BLAS_MIN_MACS``."""
    for layer in range(meta.shape[0]):
        if rows * meta[layer, META_N_IN] * meta[layer, META_N_OUT] >= BLAS_MIN_MACS:
            return False
    return True


@njit(**JIT_OPTIONS)
def _activate_value(z, activation, zero, one, slope):
    if activation == SIGMOID:
        return one / (one + fast_exp(-z))
    if activation == TANH:
        return fast_tanh(z)
    if activation == RELU:
        # `z <= 0` is False for NaN, so NaN propagates (Numba's max(0, NaN) would give 0).
        return zero if z <= zero else z  # noqa: FURB136
    if activation == LEAKY_RELU:
        return z * slope if z <= zero else z
    return z


@njit(**JIT_OPTIONS)
def _derivative_value(a, activation, zero, one, slope):
    if activation == SIGMOID:
        return a * (one - a)
    if activation == TANH:
        return one - a * a
    if activation == RELU:
        return one if a > zero else zero
    if activation == LEAKY_RELU:
        return one if a > zero else slope
    return one


@njit(**JIT_OPTIONS)
def forward_backward_small(params, grads, meta, x, y, row_scale, acts, deltas, z_out, loss):
    """``forward_backward`` for tiny networks, in plain loops (same arguments and results)."""
    t = params.dtype.type
    zero, one, slope = t(0.0), t(1.0), t(LEAKY_SLOPE)
    rows = x.shape[0]
    n_layers = meta.shape[0]
    last = n_layers - 1
    width = 0
    for layer in range(n_layers):
        width += meta[layer, META_N_OUT]
    capacity = acts.size // width

    # Forward: layer l's outputs at acts[offset : offset + rows * n_out], row-major.
    offset = 0
    in_offset = 0
    for layer in range(n_layers):
        n_in, n_out, w, b, activation = meta[layer, 0], meta[layer, 1], meta[layer, 2], meta[layer, 3], meta[layer, 4]
        for i in range(rows):
            for j in range(n_out):
                acc = params[b + j]
                for k in range(n_in):
                    inp = x[i, k] if layer == 0 else acts[in_offset + i * n_in + k]
                    acc += inp * params[w + k * n_out + j]
                if layer == last:
                    z_out[i * n_out + j] = acc
                acts[offset + i * n_out + j] = acc if activation == SOFTMAX else _activate_value(acc, activation, zero, one, slope)
            if activation == SOFTMAX:
                row = offset + i * n_out
                row_max = acts[row]
                for j in range(1, n_out):
                    row_max = max(row_max, acts[row + j])
                total = zero
                for j in range(n_out):
                    e = fast_exp(acts[row + j] - row_max)
                    acts[row + j] = e
                    total += e
                inv = one / total
                for j in range(n_out):
                    acts[row + j] *= inv
        in_offset = offset
        offset += capacity * n_out

    out_offset = in_offset
    n_out = meta[last, META_N_OUT]
    a = acts[out_offset : out_offset + rows * n_out].reshape((rows, n_out))
    batch_loss = loss_value(z_out[: rows * n_out].reshape((rows, n_out)), a, y, row_scale, loss)
    output_delta(a, y, row_scale, deltas[out_offset : out_offset + rows * n_out].reshape((rows, n_out)), meta[last, 4], loss)

    # Backward, from the output layer down.
    delta_offset = out_offset
    for layer in range(last, -1, -1):
        n_in, n_out, w, b = meta[layer, 0], meta[layer, 1], meta[layer, 2], meta[layer, 3]
        below = delta_offset - capacity * n_in  # the layer below's block (unused for layer 0)
        for k in range(n_in):
            for j in range(n_out):
                acc = zero
                for i in range(rows):
                    inp = x[i, k] if layer == 0 else acts[below + i * n_in + k]
                    acc += inp * deltas[delta_offset + i * n_out + j]
                grads[w + k * n_out + j] = acc
        for j in range(n_out):
            acc = zero
            for i in range(rows):
                acc += deltas[delta_offset + i * n_out + j]
            grads[b + j] = acc
        if layer > 0:
            activation = meta[layer - 1, 4]
            for i in range(rows):
                for k in range(n_in):
                    acc = zero
                    for j in range(n_out):
                        acc += deltas[delta_offset + i * n_out + j] * params[w + k * n_out + j]
                    a_value = acts[below + i * n_in + k]
                    deltas[below + i * n_in + k] = acc * _derivative_value(a_value, activation, zero, one, slope)
        delta_offset = below
    return batch_loss
