"""Scenarios of data-parallel training, run by tests/test_distributed.py under
``mpiexec -n 2 python -m mpi4py tests/mpi_worker.py SCENARIO OUT``.

Rank 0 writes what the test checks to OUT (an .npz, or a .json for messages); each scenario's
expected values are computed by the test itself, in one process, with ``grad_shards``.
"""

import json
import sys

import numpy as np
from mpi4py import MPI

import fastgd
from fastgd.training.driver import DivergenceError

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _distributed_cases import (  # noqa: E402
    CASES,
    CHECKPOINT_CASE,
    THREE_RANK_CASES,
    case_data,
    case_network,
    partitioned_part,
)

comm = MPI.COMM_WORLD


def gather_identical(net):
    """Whether every rank holds bitwise the same parameters and optimizer state."""
    mine = np.concatenate([net.flat_parameters, net.train_state().opt_state.ravel()])
    everyone = comm.allgather(mine)
    return all(np.array_equal(everyone[0], other) for other in everyone)


def identity(out):
    # Every case of CASES on 2 ranks (THREE_RANK_CASES on 3).
    names = THREE_RANK_CASES if comm.size == 3 else CASES
    results, identical = {}, True
    for name in names:
        case = CASES[name]
        X, y, weight = case_data(case)
        net = case_network(case)
        if case["partitioned"]:
            X, y, weight = partitioned_part(case, X, y, weight, comm.rank, comm.size)
        net.fit(X, y, sample_weight=weight, comm=comm, **case["fit"], partitioned=case["partitioned"])
        identical = gather_identical(net) and identical
        results[f"{name}/params"] = net.flat_parameters
        results[f"{name}/loss"] = np.array(net.history.loss)
    if comm.rank == 0:
        np.savez(out, identical=identical, **results)


def raises(out):
    # Rank 1 fails in a callback in the middle of training: mpi4py's runner must end the job.
    X, y, weight = case_data(CASES["float64-adam"])
    net = case_network(CASES["float64-adam"])

    def fail(epoch, history, network):
        if comm.rank == 1 and epoch == 2:
            raise RuntimeError("rank 1 fails on purpose")

    net.fit(X, y, optimizer="adam", epochs=50, batch_size=20, comm=comm, callbacks=fail)


def diverges(out):
    X, y, weight = case_data(CASES["float64-sgd"])
    net = fastgd.Network([6, 9, 2], activation="identity", loss="mse", random_state=7, n_threads=1)
    try:  # diverges in epoch 2 (the test checks it against one process)
        net.fit(X * 3, y, optimizer=fastgd.SGD(lr=0.094), epochs=50, batch_size=20, comm=comm)
        outcome = {"epoch": None}
    except DivergenceError as error:
        outcome = {"epoch": error.epoch, "trained": net.epochs_trained, "losses": len(error.history.loss)}
    outcome["identical"] = gather_identical(net)
    everyone = comm.gather(outcome)
    if comm.rank == 0:
        with open(out, "w") as file:
            json.dump(everyone, file)


def checkpoint(out):
    # Uninterrupted: 4 epochs on 2 ranks. Interrupted: 2 epochs with a checkpoint, then the file
    # loaded on every rank and 2 more epochs.
    case = CHECKPOINT_CASE
    X, y, weight = case_data(case)
    path = out + ".checkpoint.npz"
    whole = case_network(case)
    whole.fit(X, y, sample_weight=weight, comm=comm, epochs=4, **case["fit"])
    first = case_network(case)
    first.fit(X, y, sample_weight=weight, comm=comm, epochs=2, checkpoint=path, **case["fit"])
    comm.Barrier()
    resumed = fastgd.load(path)
    resumed.n_threads = 1
    # optimizer=None: continue with the checkpoint's optimizer and its state.
    resumed.fit(X, y, sample_weight=weight, comm=comm, epochs=2, **dict(case["fit"], optimizer=None))
    if comm.rank == 0:
        np.savez(
            out,
            whole=whole.flat_parameters,
            resumed=resumed.flat_parameters,
            whole_loss=whole.history.loss,
            resumed_loss=resumed.history.loss,
            ranks=fastgd.distributed.checkpoint_ranks(path),
        )


def sizes(out):
    # Rank 1 passes fewer rows: every rank must get the same clear error, nobody waits.
    rng = np.random.default_rng(0)
    rows = 40 if comm.rank == 0 else 37
    X, y = rng.normal(size=(rows, 3)), rng.normal(size=(rows, 1))
    messages = []
    for partitioned in (False, True):
        net = fastgd.Network([3, 4, 1], loss="mse", random_state=0, n_threads=1)
        before = net.flat_parameters.copy()
        try:
            net.fit(X, y, epochs=2, batch_size=8, comm=comm, partitioned=partitioned)
            messages.append(None)
        except ValueError as error:
            messages.append([str(error), bool(np.array_equal(before, net.flat_parameters))])
    everyone = comm.gather(messages)
    if comm.rank == 0:
        with open(out, "w") as file:
            json.dump(everyone, file)


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    {"identity": identity, "raises": raises, "diverges": diverges, "checkpoint": checkpoint, "sizes": sizes}[scenario](
        out
    )
