"""The compiled training loop's one door to other processes: ``exchange``, the stage through
which data-parallel training adds up each step's gradient over the ranks (``fastgd.distributed``
provides the channels; this package imports no MPI).

The loop calls ``exchange(channel, kind, values, scalars)`` from thread 0 while the rest of the
team waits at a barrier. It enters Python (``numba.objmode``, taking the GIL for the call's
duration, ~3 µs) and calls ``CHANNELS[channel](kind, values, scalars)``, which does the
communication and writes the results back into ``values`` and ``scalars``:

``EXCHANGE_STEP``
    ``values`` (the rank's gradient, the parameters' dtype) and ``scalars`` (float64: the rank's
    share of the batch loss, its stop request) become their sums over the ranks, added in rank
    order so that the result does not depend on the MPI library's reduction algorithm.
``EXCHANGE_WEIGHTS``
    ``scalars`` (float64: the rank's batch weight for each step of an epoch, partitioned data)
    becomes its sum over the ranks, in rank order; ``values`` is not used.
"""

import numpy as np
from numba import objmode

from .compat import kernel
from .config import JIT_OPTIONS

EXCHANGE_STEP = 0
EXCHANGE_WEIGHTS = 1

# ``scalars`` of an EXCHANGE_STEP.
SCALAR_LOSS = 0
SCALAR_STOP = 1
STEP_SCALARS = 2

# channel id -> callable(kind, values, scalars); filled by fastgd.distributed.
CHANNELS = {}

# Taking the GIL inside a function compiled with nogil=True makes Numba warn; the GIL is taken
# here on purpose, for the communication only.
_OPTIONS = dict(JIT_OPTIONS, nogil=False)


def call_channel(channel, kind, values, scalars):
    """Run channel ``channel``'s exchange (Python)."""
    CHANNELS[int(channel)](int(kind), values, scalars)


@kernel(**_OPTIONS)
def exchange(channel, kind, values, scalars):
    """Exchange ``values`` and ``scalars`` with the other ranks through ``CHANNELS[channel]``
    (see the module's docstring); returns 0.

    Parameters
    ----------
    channel : int64
    kind : int64
        ``EXCHANGE_STEP`` or ``EXCHANGE_WEIGHTS``.
    values : ndarray, shape (n_params,)
        Updated in place.
    scalars : ndarray of float64
        Updated in place.
    """
    with objmode():
        call_channel(channel, kind, values, scalars)
    return np.int64(0)


@kernel(**JIT_OPTIONS)
def no_exchange(channel, kind, values, scalars):
    """``exchange``'s stand-in in one process, where the loop never calls it (compiling the
    real one, with its Python call, into every single-process fit would cost compile time
    for nothing)."""
    return np.int64(0)
