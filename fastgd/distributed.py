"""Data-parallel training on MPI: ``net.fit(X, y, ..., comm=MPI.COMM_WORLD)``.

Every rank (process) runs the same script and calls ``fit`` with the same arguments. Each step,
every rank computes the gradient of its share of the batch inside the compiled loop, and the
ranks add their gradients up in **rank order** (``FixedOrderSum``: an all-to-all of gradient
chunks, each rank adding up one chunk rank by rank, then an all-gather), so the sum does not
depend on the MPI library's reduction algorithm and every rank takes the same step. Training on
P ranks is bitwise identical to ``fit(..., grad_shards=P)`` in one process.

Needs mpi4py (``pip install "fastgd[mpi]"``, which also installs the MPICH wheel; on a cluster,
an mpi4py built against the site's MPI works the same). Launch with mpi4py's runner, which turns
an uncaught exception on one rank into an abort of the whole job::

    mpiexec -n 4 python -m mpi4py train.py

The rest of fastgd never imports this module's MPI side unless ``comm`` is given.
"""

from __future__ import annotations

import itertools
import os

import numpy as np

from ._threads import usable_cores
from .kernels import exchange as _exchange
from .kernels.epoch_end import EXCHANGE_STEP, EXCHANGE_WEIGHTS
from .kernels.layout import STEP_SCALARS

__all__ = ["FixedOrderSum", "Session", "checkpoint_ranks", "local_threads", "mpi", "partition_rows"]

_channel_ids = itertools.count(1)


def mpi():
    """mpi4py's ``MPI`` module, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"data-parallel training needs mpi4py: pip install 'fastgd[mpi]' ({error})") from None
    return MPI


def check_comm(comm):
    """``comm`` if it is a usable mpi4py intra-communicator, else TypeError/ValueError."""
    MPI = mpi()
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"comm must be an mpi4py intra-communicator (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
    if comm == MPI.COMM_NULL:
        raise ValueError("comm is MPI.COMM_NULL")
    return comm


def partition_rows(n_rows, comm):
    """This rank's rows of ``n_rows`` for training on partitioned data: an equal number on
    every rank (``n_rows // size``), rank r taking ``slice(r·m, (r+1)·m)``; the last
    ``n_rows % size`` rows are left out (partitioned training needs equal sizes).

    Returns
    -------
    slice
    """
    size, rank = comm.Get_size(), comm.Get_rank()
    per_rank = int(n_rows) // size
    if per_rank == 0:
        raise ValueError(f"{n_rows} rows cannot give each of {size} ranks a row")
    return slice(rank * per_rank, (rank + 1) * per_rank)


def local_threads(ranks_on_node):
    """Threads for each rank when ``ranks_on_node`` ranks share this node: the cores this
    process may run on when the launcher bound it to some, else the node's cores divided by
    its ranks (at least 1)."""
    total = os.cpu_count() or 1
    usable = usable_cores()
    if usable < total:  # bound by the launcher (mpiexec -bind-to ...): those cores are its own
        return usable
    return max(1, total // max(1, int(ranks_on_node)))


class FixedOrderSum:
    """The exchange of one data-parallel fit: each step's gradient (``values``, ``dtype``) and
    scalars (float64) summed over the ranks in rank order.

    The gradient is cut into ``size`` chunks; an all-to-all sends chunk k of every rank to rank
    k, which adds them up rank 0 first, then rank 1, ... (the order of ``fit(grad_shards=P)``
    in one process); an all-gather puts every chunk's sum back into every rank's gradient. The
    buffers go to MPI as they are (counts and offsets, no packing). The scalars are gathered
    from every rank and added up by each, in rank order. Traffic per rank and step: about
    2·(P−1)/P times the gradient, as in a ring all-reduce, whatever reduction algorithm the MPI
    library would have picked.
    """

    def __init__(self, comm, dtype, n_values):
        MPI = mpi()
        self.comm, self.in_place = comm, MPI.IN_PLACE
        self.size, self.rank = comm.Get_size(), comm.Get_rank()
        self.dtype = np.dtype(dtype)
        self.mpi_type = {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}[self.dtype]
        self.n_values = int(n_values)
        bounds = [rank * self.n_values // self.size for rank in range(self.size + 1)]
        self.counts = np.diff(bounds).astype(np.int64)
        self.offsets = np.asarray(bounds[:-1], dtype=np.int64)
        self.mine = slice(bounds[self.rank], bounds[self.rank + 1])
        chunk = int(self.counts[self.rank])
        # My chunk from every other rank (nothing is sent to oneself: the own chunk is read in place).
        self.received = np.zeros((self.size, chunk), dtype=self.dtype)
        self.received_counts = np.where(np.arange(self.size) == self.rank, 0, chunk).astype(np.int64)
        self.received_offsets = np.arange(self.size, dtype=np.int64) * chunk
        self.send_counts = np.where(np.arange(self.size) == self.rank, 0, self.counts).astype(np.int64)
        self.scalars = np.zeros((self.size, STEP_SCALARS))
        self.sums = np.zeros(STEP_SCALARS)  # reused every step: nothing allocated per step

    def __call__(self, kind, values, scalars):
        # A diverging gradient overflows here as it would in one process: the loop sees the
        # non-finite loss and stops; no warning.
        with np.errstate(all="ignore"):
            if kind == EXCHANGE_STEP:
                self.step(values, scalars)
            elif kind == EXCHANGE_WEIGHTS:
                self.weights(scalars)
            else:
                raise ValueError(f"unknown exchange kind {kind}")

    def step(self, values, scalars):
        """``values`` and ``scalars[:STEP_SCALARS]`` become their sums over the ranks."""
        comm, kind = self.comm, self.mpi_type
        comm.Allgather(scalars[:STEP_SCALARS], self.scalars)  # a contiguous view (Work.scalars)
        comm.Alltoallv(
            [values, (self.send_counts, self.offsets), kind],
            [self.received, (self.received_counts, self.received_offsets), kind],
        )
        own = values[self.mine]
        if self.rank == 0:
            total = own  # (own + rank 1) + rank 2 ..., in place
        else:
            total = self.received[0]
            for rank in range(1, self.rank):
                total += self.received[rank]
            total += own
        for rank in range(self.rank + 1, self.size):
            total += self.received[rank]
        if self.rank != 0:
            own[...] = total
        comm.Allgatherv(self.in_place, [values, (self.counts, self.offsets), kind])
        sums = self.sums
        sums[...] = self.scalars[0]
        for rank in range(1, self.size):
            sums += self.scalars[rank]
        scalars[:STEP_SCALARS] = sums

    def weights(self, scalars):
        """``scalars`` (one batch weight per step of an epoch) becomes its sum over the ranks."""
        gathered = np.empty((self.size, scalars.size))
        self.comm.Allgather(np.ascontiguousarray(scalars), gathered)
        total = np.zeros(scalars.size)
        for rank in range(self.size):
            total += gathered[rank]
        scalars[...] = total


_HINTS = {
    ("rows", False): "every rank must pass all the rows (or use partitioned=True)",
    (
        "rows",
        True,
    ): "partitioned data needs the same number of rows on every rank (see fastgd.distributed.partition_rows)",
}


class Session:
    """One data-parallel ``fit``: fastgd's own duplicate of the user's communicator (so that its
    traffic never mixes with the application's), the node's ranks, and the exchange channel
    registered for the compiled loop. Close it (``close``) when the fit ends."""

    def __init__(self, comm):
        MPI = mpi()
        check_comm(comm)
        self.comm = comm.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.node_rank, self.node_size = self.node.Get_rank(), self.node.Get_size()
        # The compiled call may run in a helper thread (Ctrl-C handling): only allowed when MPI
        # may be called from any thread, one at a time.
        self.any_thread = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
        self.channel = 0

    @property
    def root(self) -> bool:
        return self.rank == 0

    def agree(self, facts, error):
        """Compare every rank's ``facts`` (a dict; None with ``error`` when the rank's own checks
        failed) and raise the same ValueError on every rank when one rank failed or the facts
        differ, so that no rank goes on to wait for the others forever. Returns every rank's
        facts, by rank."""
        message = None if error is None else f"{type(error).__name__}: {error}"
        everyone = self.comm.allgather((facts, message))
        failed = [(rank, text) for rank, (_, text) in enumerate(everyone) if text is not None]
        if failed:
            if error is not None:
                raise error
            rank, text = failed[0]
            raise ValueError(f"fit failed on rank {rank} of {self.size} ({text}); every rank stops")
        reference = everyone[0][0]
        for rank, (theirs, _) in enumerate(everyone[1:], start=1):
            for key in reference:
                if key.startswith("_"):
                    continue
                if theirs.get(key) != reference[key]:
                    hint = _HINTS.get(
                        (key, reference.get("partitioned")), "every rank must call fit with the same arguments"
                    )
                    raise ValueError(
                        f"ranks disagree on {key}: rank 0 has {reference[key]!r}, rank {rank} has "
                        f"{theirs.get(key)!r}; {hint}"
                    )
        return [facts for facts, _ in everyone]

    def broadcast(self, value):
        """Rank 0's ``value``, on every rank."""
        return self.comm.bcast(value, root=0)

    def decide(self, halt, chunk, stop):
        """Between compiled calls: rank 0's ``halt`` and ``chunk``, and whether any rank was
        asked to stop (Ctrl-C)."""
        everyone = self.comm.allgather((bool(halt), chunk, bool(stop)))
        return everyone[0][0], everyone[0][1], any(asked for _, _, asked in everyone)

    def share_network(self, net):
        """Give every rank rank 0's parameters, optimizer and its state, step count, epochs and
        history. The arrays go as buffers (``Bcast``), the rest pickled: pickling the state of a
        25 MB network cost ~100 ms a fit."""
        arrays = ("parameters", "initial_parameters", "optimizer_state")
        state = net.state_dict(copy=False) if self.root else None
        small = self.broadcast({k: v for k, v in state.items() if k not in arrays} if self.root else None)
        shapes = self.broadcast({k: state[k].shape for k in arrays} if self.root else None)
        full = dict(small)
        for key in arrays:
            buffer = state[key] if self.root else np.empty(shapes[key], dtype=net.dtype)
            self.comm.Bcast(buffer, root=0)
            full[key] = buffer
        if not self.root:
            net.load_state_dict(full)

    def in_turn(self, work):
        """Run ``work()`` on this node's rank 0 first and then, once it is done, on the node's
        other ranks: compiling once per node, the others loading from the cache."""
        if self.node_rank == 0:
            try:
                work()
            finally:
                self.node.Barrier()
        else:
            self.node.Barrier()
            work()

    def open_channel(self, dtype, n_values):
        """Register this fit's exchange for the compiled loop; returns its id."""
        self.channel = next(_channel_ids)
        _exchange.CHANNELS[self.channel] = FixedOrderSum(self.comm, dtype, n_values)
        return self.channel

    def abort(self, error):
        """End the whole job after ``error`` was raised on this rank only (the others would
        wait for it forever): print it, then ``MPI_Abort``."""
        import sys
        import traceback

        print(
            f"fastgd: rank {self.rank} of {self.size} failed during data-parallel training; ending the job",
            file=sys.stderr,
        )
        traceback.print_exception(error, file=sys.stderr)
        sys.stderr.flush()
        self.comm.Abort(1)

    def close(self):
        _exchange.CHANNELS.pop(self.channel, None)
        for comm in (self.node, self.comm):
            comm.Free()


def checkpoint_ranks(path):
    """How many processes trained the checkpoint at ``path`` (None for a file that is not a
    checkpoint of a fit). A checkpoint resumes on any number of ranks."""
    from .persistence import read

    training = read(path)[1].get("training")
    return None if training is None else training["ranks"]
