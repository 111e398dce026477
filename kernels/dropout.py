"""Inverted dropout's masks, drawn from counters: which units of a layer a training step drops
depends only on (the seed, the step, the layer, the row's index in the batch, the unit), never on
threads, shards, ranks or the order work is done in, so the masks are the same on any number of
threads or processes and in the NumPy twin (``fastgd.reference.dropout_masks``).

While training, a hidden layer with rate p multiplies each output by 0 (probability p) or by
1/(1 − p), as PyTorch's ``nn.Dropout`` does; the multipliers are kept (``buffers.masks``) for
the backward pass, which multiplies the local gradient by the same ones. A pass with ``key``
``NO_DROPOUT`` (predictions, losses, gradients, validation) drops nothing.

The draw for unit j of row r: ``h = mix(mix(mix(key + (layer + 1)·φ) + (row0 + r + 1)·φ) +
(j + 1)·φ)`` (splitmix64's finaliser ``mix``, φ the golden-ratio increment); the unit is kept
when the top 53 bits of h are at least p·2⁵³. ``key = mix(seed·φ + step)``, step counted from 1
over all fits of the network.
"""

import numpy as np

from .jit import helper

NO_DROPOUT = -1  # the key of a pass that drops nothing

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
TWO_53 = 9007199254740992.0


@helper
def mix(z):
    """splitmix64's finaliser: a bijection of uint64 with good avalanche."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@helper
def step_key(seed, step):
    """The dropout key of training step ``step`` (1-based, over all fits): a non-negative int64."""
    return np.int64(mix(np.uint64(seed) * GOLDEN + np.uint64(step)) >> np.uint64(1))


@helper
def keep_threshold(rate):
    """The 53-bit threshold at or above which a unit is kept, for dropout ``rate``."""
    return np.uint64(rate * TWO_53)


@helper
def drop_rows(key, layer, rate, row0, rows, width, a, mask):
    """Inverted dropout over ``rows × width`` outputs ``a`` (row-major, flat) of layer ``layer``,
    rows ``row0`` … of the batch: each output multiplied by 0 or 1/(1 − rate), the multiplier
    written to ``mask`` (same shape)."""
    t = a.dtype.type
    limit = keep_threshold(rate)
    scale = t(1.0 / (1.0 - rate))
    zero = t(0.0)
    base = mix(np.uint64(key) + np.uint64(layer + 1) * GOLDEN)
    for r in range(rows):
        row_base = mix(base + np.uint64(row0 + r + 1) * GOLDEN)
        for j in range(width):
            h = mix(row_base + np.uint64(j + 1) * GOLDEN)
            m = scale if (h >> np.uint64(11)) >= limit else zero
            mask[r * width + j] = m
            a[r * width + j] *= m


@helper
def apply_mask(delta, mask, n):
    """``delta *= mask`` over ``n`` elements (the backward pass of inverted dropout)."""
    for i in range(n):
        delta[i] *= mask[i]
