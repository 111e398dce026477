"""The data-parallel cases shared by tests/test_distributed.py (single-process expectations) and
tests/mpi_worker.py (the same fits on 2 ranks)."""

import numpy as np

import fastgd
from fastgd.streaming import Streaming

OPTIMIZER_NAMES = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")
ROWS = 203  # batches of 50: the last one has 3 rows, split 1 + 2 over two ranks


def _case(dtype, optimizer, partitioned=False, **fit):
    fit = {"optimizer": optimizer, "epochs": 3, "batch_size": 50, "shuffle": not partitioned, **fit}
    return {"dtype": dtype, "partitioned": partitioned, "fit": fit}


CASES = {f"{dtype}-{name}": _case(dtype, name) for dtype in ("float32", "float64") for name in OPTIMIZER_NAMES}
CASES["float64-adam-partitioned"] = _case("float64", "adam", partitioned=True)
CASES["float32-momentum-partitioned"] = _case("float32", "momentum", partitioned=True, batch_size=40)
CASES["float64-rmsprop-numpy"] = dict(_case("float64", "rmsprop"), backend="numpy")
# Clipping applies to the gradient summed over the ranks.
CASES["float64-adam-clipped"] = _case("float64", "adam", clip_grad_norm=0.05, clip_grad_value=0.02)
CASES["float32-sgd-clipped-numpy"] = dict(_case("float32", "sgd", clip_grad_norm=0.05), backend="numpy")
# Streamed in chunks of 3 batches (fastgd.streaming): each rank reads only its rows of a batch.
CASES["float32-adam-streamed"] = _case("float32", "adam", streaming=Streaming(chunk_mb=0.005))
CASES["float64-sgd-partitioned-streamed"] = _case(
    "float64", "sgd", partitioned=True, streaming=Streaming(chunk_mb=0.005)
)
CHECKPOINT_CASE = {"dtype": "float32", "partitioned": False, "fit": {"optimizer": "adam", "batch_size": 32}}
# Three ranks: chunks of the gradient of unequal sizes, shards of 16 and 17 rows.
THREE_RANK_CASES = ("float32-adam", "float64-sgd")


def case_data(case):
    """X (ROWS, 6), y (ROWS, 2) and sample weights in {1/4, 2/4, 3/4, 1}: sums of them are exact,
    so that partitioned training (which adds each rank's batch weight, then the ranks') meets
    one process's sum row by row bitwise."""
    rng = np.random.default_rng(2024)
    X = rng.normal(size=(ROWS, 6))
    y = np.tanh(X[:, :2] @ rng.normal(size=(2, 2))) + 0.1 * rng.normal(size=(ROWS, 2))
    weight = rng.integers(1, 5, size=ROWS) / 4.0
    return X, y, weight


def case_network(case):
    return fastgd.Network(
        [6, 9, 2],
        activation="tanh",
        loss="mse",
        dtype=case["dtype"],
        random_state=7,
        n_threads=1,
        l2=1e-3,
        backend=case.get("backend", "numba"),
    )


def partitioned_part(case, X, y, weight, rank, ranks):
    """Rank ``rank``'s rows of partitioned data: an equal block each."""
    rows = fastgd.distributed.partition_rows(X.shape[0], _Comm(rank, ranks))
    return X[rows], y[rows], weight[rows]


def interleaved(case, X, y, weight, ranks):
    """The one-process data whose consecutive batches (no shuffling) of ``batch_size`` rows cut
    into ``ranks`` shards are exactly the ranks' partitioned batches: step k takes rows
    [k·b, (k+1)·b) of each rank's part (b = batch_size / ranks), rank after rank."""
    parts = [partitioned_part(case, X, y, weight, rank, ranks) for rank in range(ranks)]
    local = case["fit"]["batch_size"] // ranks
    rows = parts[0][0].shape[0]
    order = [(rank, start) for start in range(0, rows, local) for rank in range(ranks)]
    pick = [np.concatenate([parts[rank][k][start : start + local] for rank, start in order]) for k in range(3)]
    return tuple(pick)


class _Comm:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size
