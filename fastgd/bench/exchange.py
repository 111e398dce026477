"""The cost of one gradient exchange of data-parallel training (``distributed.FixedOrderSum``,
the sum in rank order) against MPI's own ``Allreduce`` of the same buffer, per size::

    mpiexec -n 2 python -m mpi4py -m fastgd.bench.exchange [floats ...]

Rank 0 prints, per size, the slowest rank's best time over three rounds. The default sizes are
1e3 and 1e5 float32 values and the gradients of the ``mid`` (0.94 MB) and ``large`` (25.3 MB)
workloads. Run it with the MPI transport to measure (e.g. ``FI_PROVIDER=tcp
MPIR_CVAR_CH4_NETMOD=ofi MPIR_CVAR_NOLOCAL=1`` for MPICH over TCP instead of shared memory).
"""

import sys
import time

import numpy as np

DEFAULT_SIZES = (1_000, 100_000, 235_146, 6_326_288)


def measure(comm, sizes=DEFAULT_SIZES, rounds=3):
    """``[(floats, fixed-order seconds, Allreduce seconds), ...]`` (the slowest rank's best of
    ``rounds``), the same on every rank."""
    from mpi4py import MPI

    from ..distributed import FixedOrderSum
    from ..kernels.layout import STEP_SCALARS

    results = []
    for n in sizes:
        values, scalars = np.zeros(n, np.float32), np.zeros(STEP_SCALARS)  # zeros: summed in place, never overflowing
        exchange = FixedOrderSum(comm, np.float32, n)
        total = np.empty_like(values)
        repeats = max(5, min(200, int(2e7 // max(n, 1))))
        row = [n]
        # (each operation runs within this iteration: the loop variables it reads are this size's)
        for operation in (lambda: exchange.step(values, scalars), lambda: comm.Allreduce(values, total)):  # noqa: B023
            for _ in range(3):
                operation()
            best = []
            for _ in range(rounds):
                comm.Barrier()
                start = time.perf_counter()
                for _ in range(repeats):
                    operation()
                best.append((time.perf_counter() - start) / repeats)
            row.append(comm.allreduce(min(best), op=MPI.MAX))
        results.append(tuple(row))
    return results


def main(argv):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    sizes = tuple(int(float(v)) for v in argv) or DEFAULT_SIZES
    results = measure(comm, sizes)
    if comm.Get_rank() == 0:
        print(f"{comm.Get_size()} ranks, MPI: {MPI.Get_library_version().splitlines()[0].strip()}")
        header = f"{'float32 values':>14} {'MB':>8} {'fixed order µs':>15} {'Allreduce µs':>13}"
        print(header)
        print("-" * len(header))
        for n, fixed, allreduce in results:
            print(f"{n:>14} {n * 4 / 1e6:>8.3f} {fixed * 1e6:>15.1f} {allreduce * 1e6:>13.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
