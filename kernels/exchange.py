# stamp: e6915dc5062719b4a611d4156a6ba126
"""The compiled training loop's one door to other processes: ``exchange``, the piece through
which data-parallel training adds up each step's gradient over the ranks (``fastgd.distributed``
provides the channels; this package imports no MPI). It is compiled on its own (``kernels.stages``) and
only for data-parallel fits: a fit in one process compiles none of it.

Every thread of the team calls ``exchange``; thread 0 enters Python (``numba.objmode``, taking
the GIL for the call's duration, ~3 µs) and calls ``CHANNELS[channel](kind, values, scalars)``,
which does the communication and writes the results back into ``values`` and ``scalars``, while
the others wait at a barrier:

``EXCHANGE_STEP``
    ``values`` (the rank's gradient, the parameters' dtype) and ``scalars`` (float64: the rank's
    share of the batch loss, its stop request) become their sums over the ranks, added in rank
    order so that the result does not depend on the MPI library's reduction algorithm.
``EXCHANGE_WEIGHTS``
    ``scalars`` (float64: the rank's batch weight for each step of an epoch, partitioned data)
    becomes its sum over the ranks, in rank order; ``values`` is not used.
"""

from numba import objmode

from .layout import CONTROL, STEP_SCALARS  # noqa: F401 (fastgd.distributed reads STEP_SCALARS here)
from .team import barrier, read_flag, write_flag

# What an exchange does (its first argument).
EXCHANGE_STEP = 0
EXCHANGE_WEIGHTS = 1

# ``scalars`` of an EXCHANGE_STEP.
SCALAR_LOSS = 0
SCALAR_STOP = 1

# channel id -> callable(kind, values, scalars); filled by fastgd.distributed.
CHANNELS = {}


def call_channel(channel, kind, values, scalars):
    """Run channel ``channel``'s exchange (Python); ``values``: the gradient (or a 2-D array of
    them, the first row being the rank's)."""
    CHANNELS[int(channel)](int(kind), values[0] if values.ndim == 2 else values, scalars)


def exchange(mode, tid, n_threads, control, channel, values, scalars, sample_weight, order, batch_size, value):
    """One exchange with the other ranks, by the whole team (see the module's docstring).

    EXCHANGE_STEP: the step's gradient ``values``, loss ``value`` and stop request (the team's
    ``CONTROL.stop_seen``) summed over the ranks; returns the summed loss, with the summed stop
    request in ``CONTROL.stop_seen``. ``scalars``: ``STEP_SCALARS`` float64 of room.
    EXCHANGE_WEIGHTS (partitioned data): each batch's weight over the epoch's row ``order``
    (batches of ``batch_size``) into ``scalars``, summed over the ranks; returns their total.

    Parameters
    ----------
    mode : int64
    tid, n_threads, control
        The team.
    channel : int64
    values : ndarray, shape (shards, n_params)
        The shards' gradients; row 0 is the one exchanged (whole arrays go to Python: a view
        made in compiled code would reach it as the array it views).
    scalars : ndarray of float64
    sample_weight : ndarray, shape (n,)
    order : ndarray of int64, shape (n,)
    batch_size : int64
    value : float64

    Returns
    -------
    float64
    """
    barrier(control, n_threads)
    if tid == 0:
        if mode == EXCHANGE_STEP:
            scalars[SCALAR_LOSS] = value
            scalars[SCALAR_STOP] = read_flag(control, CONTROL.stop_seen)
        else:
            n = sample_weight.size
            for start in range(0, n, batch_size):
                stop = start + batch_size if batch_size < n - start else n
                weight = 0.0
                for r in range(start, stop):
                    weight += sample_weight[order[r]]
                scalars[start // batch_size] = weight
        with objmode():
            call_channel(channel, mode, values, scalars)
        if mode == EXCHANGE_STEP:
            write_flag(control, CONTROL.stop_seen, 1 if scalars[SCALAR_STOP] != 0.0 else 0)
    barrier(control, n_threads)
    if mode == EXCHANGE_STEP:
        return scalars[SCALAR_LOSS]
    total = 0.0
    for k in range((sample_weight.size + batch_size - 1) // batch_size):
        total += scalars[k]
    return total
