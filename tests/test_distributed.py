"""Data-parallel training on MPI (``fit(..., comm=...)``): jobs of 2 (and 3) ranks launched with
``mpiexec`` (from the ``mpi`` extra: mpi4py and the MPICH wheel), each bounded by a timeout.

Expected values come from one process: ``fit(..., grad_shards=P)``, which the other tests check
against the NumPy reference. Every rank runs one thread (``n_threads=1``).
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("mpi4py")

from _distributed_cases import (  # noqa: E402
    CASES,
    CHECKPOINT_CASE,
    THREE_RANK_CASES,
    case_data,
    case_network,
    interleaved,
)

import fastgd  # noqa: E402
from fastgd.training.driver import DivergenceError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mpi_worker.py")
# mpiexec of the MPI that mpi4py uses: the MPICH wheel's, next to this Python.
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
# A job compiles the distributed loops on a cold cache (a few seconds each); anything longer is a hang.
JOB_TIMEOUT = 600
# MPI over TCP through libfabric, never shared memory: the network path of a cluster.
TCP = {"MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp", "MPIR_CVAR_NOLOCAL": "1"}

pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install 'fastgd[mpi]')")


def run_job(scenario, out, ranks=2, env=None, runner=True, launcher=(), timeout=JOB_TIMEOUT, prefix=()):
    command = [
        *prefix,
        MPIEXEC,
        *launcher,
        "-n",
        str(ranks),
        sys.executable,
        *(["-m", "mpi4py"] if runner else []),
        WORKER,
        scenario,
        str(out),
    ]
    environment = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **(env or {}))
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=environment, stdin=subprocess.DEVNULL
    )
    return result, time.monotonic() - started


def expected(name, ranks=2):
    """The case trained in this process with ``grad_shards=ranks``."""
    case = CASES[name]
    X, y, weight = case_data(case)
    if case["partitioned"]:
        X, y, weight = interleaved(case, X, y, weight, ranks)
    net = case_network(case)
    net.fit(X, y, sample_weight=weight, grad_shards=ranks, **case["fit"])
    return net


@pytest.fixture(scope="module")
def single_process():
    return {name: expected(name) for name in CASES}


def check_identity(results, single_process, names):
    assert bool(results["identical"]), "the ranks ended with different parameters or optimizer state"
    for name in names:
        net = single_process[name]
        assert np.array_equal(results[f"{name}/params"], net.flat_parameters), name
        if "streaming" in CASES[name]["fit"] and CASES[name]["partitioned"]:
            # Streamed, the epoch loss is a weighted mean of the chunks' losses, whose weights
            # one process adds row by row and partitioned ranks batch by batch: equal to rounding.
            np.testing.assert_allclose(results[f"{name}/loss"], net.history.loss, rtol=1e-13, err_msg=name)
        else:
            assert np.array_equal(results[f"{name}/loss"], net.history.loss), name


def test_two_ranks_equal_grad_shards_bitwise(tmp_path, single_process):
    # Every optimizer, both dtypes, sample weights, a short last batch (3 rows: 1 + 2), the
    # weight penalty, shuffling; partitioned data against the same batches in one process;
    # the NumPy backend.
    result, _ = run_job("identity", tmp_path / "out.npz")
    assert result.returncode == 0, result.stderr
    check_identity(np.load(tmp_path / "out.npz"), single_process, CASES)


def test_two_ranks_over_tcp(tmp_path, single_process):
    result, _ = run_job("identity", tmp_path / "out.npz", env=TCP)
    assert result.returncode == 0, result.stderr
    check_identity(np.load(tmp_path / "out.npz"), single_process, CASES)


def test_three_ranks_equal_grad_shards_bitwise(tmp_path):
    # Uneven cuts: the gradient's chunks, a batch's shards (50 rows: 16, 17, 17; last batch 3: 1 each).
    result, _ = run_job("identity", tmp_path / "out.npz", ranks=3)
    assert result.returncode == 0, result.stderr
    check_identity(
        np.load(tmp_path / "out.npz"), {name: expected(name, 3) for name in THREE_RANK_CASES}, THREE_RANK_CASES
    )


@pytest.mark.parametrize("runner", [True, False], ids=["python-m-mpi4py", "plain-python"])
def test_exception_on_one_rank_ends_the_job(tmp_path, runner):
    # Rank 1 raises in a callback while rank 0 waits for it: the job must end, not hang (with
    # plain python too: fit aborts the job itself).
    result, seconds = run_job("raises", tmp_path / "out", runner=runner, timeout=120)
    assert result.returncode != 0
    assert "rank 1 fails on purpose" in result.stderr
    assert seconds < 120


def test_divergence_on_every_rank_at_the_same_epoch(tmp_path):
    result, _ = run_job("diverges", tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    ranks = json.loads((tmp_path / "out.json").read_text())
    X, y, _ = case_data(CASES["float64-sgd"])
    net = fastgd.Network([6, 9, 2], activation="identity", loss="mse", random_state=7, n_threads=1)
    with pytest.raises(DivergenceError) as caught:
        net.fit(X * 3, y, optimizer=fastgd.SGD(lr=0.094), epochs=50, batch_size=20, grad_shards=2)
    assert caught.value.epoch == 2  # the worker's setting diverges after one finite epoch
    for outcome in ranks:
        assert outcome == {"epoch": 2, "trained": 1, "losses": 1, "identical": True}


def test_checkpoint_from_two_ranks_resumes_on_one_and_two(tmp_path):
    result, _ = run_job("checkpoint", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    results = np.load(tmp_path / "out.npz")
    assert int(results["ranks"]) == 2  # recorded in the checkpoint
    # Resumed on 2 ranks: the uninterrupted 4 epochs, bitwise.
    assert np.array_equal(results["resumed"], results["whole"])
    assert np.array_equal(results["resumed_loss"], results["whole_loss"])
    # Resumed here, in one process with the same shards.
    X, y, weight = case_data(CHECKPOINT_CASE)
    resumed = fastgd.load(tmp_path / "out.checkpoint.npz")
    assert resumed.epochs_trained == 2
    resumed.fit(X, y, sample_weight=weight, epochs=2, grad_shards=2, **dict(CHECKPOINT_CASE["fit"], optimizer=None))
    assert np.array_equal(resumed.flat_parameters, results["whole"])
    # And plain one-process training from the same checkpoint agrees to rounding (float32).
    plain = fastgd.load(tmp_path / "out.checkpoint.npz")
    plain.fit(X, y, sample_weight=weight, epochs=2, **dict(CHECKPOINT_CASE["fit"], optimizer=None))
    np.testing.assert_allclose(plain.flat_parameters, results["whole"], rtol=0, atol=1e-5)


def test_different_data_sizes_are_a_clear_error_on_every_rank(tmp_path):
    result, seconds = run_job("sizes", tmp_path / "out.json", timeout=120)
    assert result.returncode == 0, result.stderr
    ranks = json.loads((tmp_path / "out.json").read_text())
    for messages in ranks:
        whole, partitioned = messages
        assert "rank 0 has 40, rank 1 has 37" in whole[0] and "pass all the rows" in whole[0]
        assert "same number of rows on every rank" in partitioned[0]
        assert whole[1] and partitioned[1]  # the networks are unchanged


FAKE_SSH = """#!/bin/sh
# Called by mpiexec as: fake_ssh [options] HOST COMMAND...; runs COMMAND in HOST's network
# namespace under a host name of its own (MPI tells nodes apart by host name).
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host=$1; shift
case "$host" in {ip_a}) ns={ns_a} ;; {ip_b}) ns={ns_b} ;; *) echo "unknown host $host" >&2; exit 1 ;; esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns && $*"
"""


def _sh(*command):
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts(tmp_path):
    """Two network namespaces joined by a veth pair: two hosts, 10.77.x.1 and 10.77.x.2."""
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("needs iproute2's ip and util-linux's unshare")
    tag = f"{os.getpid() % 10000}"
    ns_a, ns_b, veth_a, veth_b = f"fgdA{tag}", f"fgdB{tag}", f"fgva{tag}", f"fgvb{tag}"
    subnet = 10 + os.getpid() % 200
    ip_a, ip_b = f"10.77.{subnet}.1", f"10.77.{subnet}.2"
    if _sh("ip", "netns", "add", ns_a).returncode != 0:
        pytest.skip("this machine does not let the tests create network namespaces (needs root or CAP_SYS_ADMIN)")
    try:
        # (a table, one entry a line: the formatter would break its entries apart)
        # fmt: off
        steps = [("ip", "netns", "add", ns_b), ("ip", "link", "add", veth_a, "type", "veth", "peer", "name", veth_b),
                 ("ip", "link", "set", veth_a, "netns", ns_a), ("ip", "link", "set", veth_b, "netns", ns_b),
                 ("ip", "-n", ns_a, "addr", "add", f"{ip_a}/24", "dev", veth_a),
                 ("ip", "-n", ns_b, "addr", "add", f"{ip_b}/24", "dev", veth_b),
                 ("ip", "-n", ns_a, "link", "set", "lo", "up"), ("ip", "-n", ns_b, "link", "set", "lo", "up"),
                 ("ip", "-n", ns_a, "link", "set", veth_a, "up"), ("ip", "-n", ns_b, "link", "set", veth_b, "up")]
        # fmt: on
        for step in steps:
            done = _sh(*step)
            if done.returncode != 0:
                pytest.skip(f"could not set up the namespaces ({' '.join(step)}: {done.stderr.strip()})")
        launcher = tmp_path / "fake_ssh"
        launcher.write_text(FAKE_SSH.format(ip_a=ip_a, ip_b=ip_b, ns_a=ns_a, ns_b=ns_b))
        launcher.chmod(0o755)
        yield {"ns_a": ns_a, "ns_b": ns_b, "veth_b": veth_b, "ip_a": ip_a, "ip_b": ip_b, "launcher": str(launcher)}
    finally:
        for ns in (ns_a, ns_b):  # removing a namespace removes its end of the veth pair
            _sh("ip", "netns", "del", ns)


def _received_bytes(ns, veth):
    stats = _sh("ip", "-n", ns, "-s", "-j", "link", "show", veth)
    return json.loads(stats.stdout)[0]["stats64"]["rx"]["bytes"]


def test_two_hosts_over_tcp(tmp_path, two_hosts, single_process):
    # One rank in each namespace, MPI over TCP across the veth pair: the multi-machine test.
    before = _received_bytes(two_hosts["ns_b"], two_hosts["veth_b"])
    launcher = (
        "-launcher",
        "ssh",
        "-launcher-exec",
        two_hosts["launcher"],
        "-localhost",
        two_hosts["ip_a"],
        "-hosts",
        f"{two_hosts['ip_a']},{two_hosts['ip_b']}",
        "-ppn",
        "1",
        "-genvall",
    )
    result, _ = run_job(
        "identity",
        tmp_path / "out.npz",
        env={"MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"},
        launcher=launcher,
        prefix=("ip", "netns", "exec", two_hosts["ns_a"]),
    )
    assert result.returncode == 0, result.stderr
    check_identity(np.load(tmp_path / "out.npz"), single_process, CASES)
    # The gradients really crossed the link: 15 fits of ~60 steps, a ~0.5 kB exchange each way.
    assert _received_bytes(two_hosts["ns_b"], two_hosts["veth_b"]) - before > 100_000
