# stamp: 4e46277e5b3ddd269cd6807e73e23e96
"""The compiled training loop's one door to other processes: ``exchange``, through which
data-parallel training adds up each step's gradient over the ranks (``fastgd.distributed``
provides the channels; this package imports no MPI). Only data-parallel fits reach it.

Every thread of the team calls ``exchange``; thread 0 calls Python (the fit's
``kernels.train.PythonCall``), which calls ``CHANNELS[channel](kind, values, scalars)`` with
the fit's arrays: it does the communication and writes the results back into them, while the
others wait at a barrier:

``EXCHANGE_STEP``
    ``values`` (the rank's gradient, the parameters' dtype) and ``scalars`` (float64: the rank's
    share of the batch loss, its stop request) become their sums over the ranks, added in rank
    order so that the result does not depend on the MPI library's reduction algorithm.
``EXCHANGE_WEIGHTS``
    ``scalars`` (float64: the rank's batch weight for each step of an epoch, partitioned data)
    becomes its sum over the ranks, in rank order; ``values`` is not used.
"""

from .epoch_end import EXCHANGE_STEP
from .jit import subroutine
from .layout import CONTROL
from .lowlevel import call_python
from .team import barrier, read_flag, write_flag

# ``scalars`` of an EXCHANGE_STEP.
SCALAR_LOSS = 0
SCALAR_STOP = 1

# channel id -> callable(kind, values, scalars); filled by fastgd.distributed.
CHANNELS = {}


def call_channel(channel, kind, values, scalars):
    """Run channel ``channel``'s exchange (Python); ``values``: the rank's gradient."""
    CHANNELS[int(channel)](int(kind), values, scalars)


@subroutine
def exchange(mode, team, python, work, sample_weight, batch_size, value):
    """One exchange with the other ranks, by the whole team (see the module's docstring).

    EXCHANGE_STEP: the step's gradient, loss ``value`` and stop request (the team's
    ``CONTROL.stop_seen``) summed over the ranks; returns the summed loss, with the summed stop
    request in ``CONTROL.stop_seen``. EXCHANGE_WEIGHTS (partitioned data): each batch's weight
    over the epoch's row ``order`` (batches of ``batch_size``) into ``batch_weights``, summed
    over the ranks; returns their total. ``python``: the address of the fit's call into Python
    (``kernels.train.PythonCall``); ``work``: the fit's ``Work`` (its ``scalars``,
    ``batch_weights`` and the epoch's row ``order``).
    """
    tid, n_threads, control = team
    scalars, batch_weights, order = work.scalars, work.batch_weights, work.order
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
                batch_weights[start // batch_size] = weight
        call_python(python, mode, 0)
        if mode == EXCHANGE_STEP:
            write_flag(control, CONTROL.stop_seen, 1 if scalars[SCALAR_STOP] != 0.0 else 0)
    barrier(control, n_threads)
    if mode == EXCHANGE_STEP:
        return scalars[SCALAR_LOSS]
    total = 0.0
    for k in range((sample_weight.size + batch_size - 1) // batch_size):
        total += batch_weights[k]
    return total
