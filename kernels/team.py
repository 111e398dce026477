"""A team of threads running one compiled kernel together (SPMD), with no threading layer.

fastgd starts ``n_threads`` Python threads (``fastgd._threads``) that each call the same
compiled, GIL-free kernel with their own ``tid``; inside, the kernel's phases are separated by
``barrier`` and the work of a phase is a list of tasks handed out by ``next_task``. Every
thread takes the same path through the kernel: decisions (stop, divergence) are made from shared
values read after a barrier. Waiting threads spin on an atomic load with the CPU's pause hint,
about 0.1 µs per barrier on two cores, so a team can synchronise many times per training step.

Tasks are fixed blocks of work (``layout.block_count``) that do not depend on the team's size,
and each is computed the same way by whichever thread takes it: results are bitwise the same for
any number of threads.

If one thread fails (an exception in Python or a bounds check), the launcher sets
``control[CONTROL_ABORT]`` and every thread waiting in a barrier raises instead of waiting
forever.
"""

import threading

from numba import njit

from .compat import atomic_add, atomic_load, atomic_store, spin_pause, yield_cpu
from .config import INTERNAL_OPTIONS, JIT_OPTIONS
from .layout import CONTROL_ABORT, CONTROL_ARRIVED, CONTROL_GENERATION, CONTROL_NEXT_TASK, CONTROL_STOP_SEEN

_INLINE = dict(JIT_OPTIONS, inline="always")

# About 50 µs of spinning (a pause is ~10-40 ns) before a waiting thread starts yielding.
SPINS_BEFORE_YIELD = 2000


@njit(**INTERNAL_OPTIONS)
def barrier(control, n_threads):
    """Wait until all ``n_threads`` threads of the team have arrived; also starts a new task
    list (``next_task`` counts from 0 again). Raises if another thread of the team failed."""
    if n_threads == 1:
        return
    generation = atomic_load(control, CONTROL_GENERATION)
    if atomic_add(control, CONTROL_ARRIVED, 1) == n_threads - 1:
        # Last to arrive: nobody is handing out tasks now.
        atomic_store(control, CONTROL_NEXT_TASK, 0)
        atomic_store(control, CONTROL_ARRIVED, 0)
        atomic_store(control, CONTROL_GENERATION, generation + 1)
        return
    spins = 0
    while atomic_load(control, CONTROL_GENERATION) == generation:
        if atomic_load(control, CONTROL_ABORT) != 0:
            raise RuntimeError("fastgd: another thread of the team failed")
        # Spin while the wait is short (the usual case: ~0.1 µs); after that, give the core
        # away each time round, so a team on a busy machine does not burn the time slice a
        # descheduled teammate needs.
        if spins < SPINS_BEFORE_YIELD:
            spins += 1
            spin_pause()
        else:
            yield_cpu()


@njit(**_INLINE)
def first_task(control, tid, n_threads):
    """This thread's first task of the current phase (compare with the phase's task count)."""
    return tid


@njit(**_INLINE)
def next_task(control, n_threads, previous):
    """This thread's next task of the current phase, after ``previous``: tasks are dealt round
    robin (thread t takes tasks t, t + n, t + 2n...). Handing them out through an atomic counter
    balanced better on a busy machine but cost ~0.1 µs per task in contended atomics, which
    halved the speed of a tiny network's step on two threads."""
    return previous + n_threads


@njit(**_INLINE)
def read_flag(control, index):
    """``control[index]``, read so that a write from another thread is seen while a loop runs
    (an atomic load: LLVM cannot hoist it out of the loop)."""
    return atomic_load(control, index)


@njit(**_INLINE)
def write_flag(control, index, value):
    atomic_store(control, index, value)


def run_team(kernel_function, args, n_threads, control):
    """Run ``kernel_function(tid, n_threads, control, *args)`` on ``n_threads`` threads, thread
    0 being the calling one, and return thread 0's result.

    The team's synchronisation slots of ``control`` are reset first. If a thread raises, the
    others are released from their barriers (``CONTROL_ABORT``) and the first error is raised
    here once every thread has ended.
    """
    n_threads = int(n_threads)
    for slot in (CONTROL_ARRIVED, CONTROL_GENERATION, CONTROL_ABORT, CONTROL_NEXT_TASK, CONTROL_STOP_SEEN):
        control[slot] = 0
    if n_threads <= 1:
        return kernel_function(0, 1, control, *args)
    errors = []

    def member(tid):
        try:
            return kernel_function(tid, n_threads, control, *args)
        except BaseException as error:  # handed to the caller below
            errors.append(error)
            control[CONTROL_ABORT] = 1
            return None

    helpers = [threading.Thread(target=member, args=(tid,), name=f"fastgd-{tid}", daemon=True) for tid in range(1, n_threads)]
    for helper in helpers:
        helper.start()
    try:
        result = member(0)
    finally:
        for helper in helpers:
            helper.join()
    if errors:
        raise errors[0]
    return result
