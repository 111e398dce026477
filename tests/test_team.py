"""The team of threads that stays up between compiled calls, per-epoch work inside the compiled
loop (validation, stopping rules, visits to Python), and fastgd's threads in the ecosystem
(NUMBA_NUM_THREADS / OMP_NUM_THREADS, threadpoolctl, joblib's workers)."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import threadpoolctl
from _helpers import regression_data

import fastgd
from fastgd._threads import team_size, usable_cores
from fastgd.kernels import team
from fastgd.kernels.layout import TEAM_MIN_MACS

TIMEOUT = 300
TWO = usable_cores() >= 2


def fit_big(n_threads=None, epochs=2, **options):
    # A step big enough for a team of threads.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 300))
    y = rng.integers(0, 10, size=400)
    assert 200 * (300 * 256 + 256 * 10) >= TEAM_MIN_MACS
    net = fastgd.Network([300, 256, 10], loss="crossentropy", random_state=3, n_threads=n_threads)
    history = net.fit(X, y, optimizer=fastgd.Adam(1e-3), epochs=epochs, batch_size=200, **options)
    return net, history


def idle_teams():
    return [member for group in team._IDLE.values() for member in group]


@pytest.mark.skipif(not TWO, reason="needs two cores")
def test_the_team_stays_up_parked_between_calls():
    team.close_idle_teams()
    fit_big()
    (first,) = idle_teams()
    assert first.size == 2 and first.alive
    fit_big()
    assert idle_teams() == [first]  # the same threads served the second fit
    # Parked between calls: blocked, not spinning (the process uses no CPU while idle).
    start = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - start < 0.1


@pytest.mark.skipif(not TWO, reason="needs two cores")
def test_two_fits_in_two_threads_each_take_a_team_and_run_at_the_same_time():
    # No process-wide lock: each fit borrows a team of its own (so two fits overlap in time), and
    # each ends bitwise as it would alone.
    alone, _ = fit_big(n_threads=2)
    team.close_idle_teams()
    results, spans = {}, {}

    def run(name):
        start = time.perf_counter()
        results[name] = fit_big(n_threads=2, epochs=4)[0]
        spans[name] = (start, time.perf_counter())

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    once = fit_big(n_threads=2, epochs=4)[0]
    for name in ("a", "b"):
        np.testing.assert_array_equal(results[name].flat_parameters, once.flat_parameters)
    (a0, a1), (b0, b1) = spans["a"], spans["b"]
    assert a0 < b1 and b0 < a1, "the two fits ran one after the other"
    assert len(idle_teams()) == 2, "each fit borrowed a team of its own"
    assert alone.n_params == once.n_params


def test_two_threads_predicting_with_one_network_each_get_what_they_would_alone():
    # Small predictions run on the calling thread, with buffers of their own per call and no
    # lock: two Python threads calling one network at once (both inside predict together) each
    # get the prediction they would get alone. (How much faster two threads serve than one is
    # measured by ``python -m fastgd bench --serve``.)
    rng = np.random.default_rng(5)
    net = fastgd.Network(
        [64, 256, 256, 10], activation="relu", loss="crossentropy", dtype="float32", random_state=0, n_threads=1
    )
    inputs = [rng.normal(size=(32, 64)).astype(np.float32) for _ in range(2)]
    expected = [net.predict(X) for X in inputs]
    inside = [0, 0]  # calls in progress at once, and the most seen
    lock = threading.Lock()
    wrong = []

    def serve(k):
        for _ in range(300):
            with lock:
                inside[0] += 1
                inside[1] = max(inside[1], inside[0])
            out = net.predict(inputs[k])
            with lock:
                inside[0] -= 1
            if not np.array_equal(out, expected[k]):
                wrong.append(k)

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not wrong
    assert inside[1] == 2, "the two threads were never inside predict together"


@pytest.mark.skipif(not TWO, reason="needs two cores")
def test_n_threads_changed_between_fits_changes_no_result_and_idle_teams_are_bounded():
    team.close_idle_teams()
    one, _ = fit_big(n_threads=1)
    assert idle_teams() == []  # one thread: no team
    two, _ = fit_big(n_threads=2)
    assert [member.size for member in idle_teams()] == [2]
    again, _ = fit_big(n_threads=1)
    for net in (two, again):
        np.testing.assert_array_equal(net.flat_parameters, one.flat_parameters)
    borrowed = [team._borrow(2) for _ in range(team.MAX_IDLE + 2)]
    for member in borrowed:
        team._give_back(member)
    assert len(idle_teams()) == team.MAX_IDLE  # the others were closed
    assert sum(member.alive for member in borrowed) == team.MAX_IDLE
    team.close_idle_teams()
    assert idle_teams() == [] and not any(member.alive for member in borrowed)


def test_an_exception_in_a_callback_propagates_with_the_network_at_that_epoch():
    X, y = regression_data(n=40)

    def failing(epoch, history, network):
        if epoch == 3:
            raise ValueError("the callback failed")

    net = fastgd.Network([3, 8, 2], random_state=0)
    with pytest.raises(ValueError, match="the callback failed"):
        net.fit(X, y, optimizer=fastgd.Adam(0.05), epochs=10, batch_size=8, callbacks=failing)
    # Three epochs trained and recorded, the parameters those of the end of epoch 3.
    assert net.epochs_trained == 3 == len(net.history.loss)
    replay = fastgd.Network([3, 8, 2], random_state=0)
    replay.fit(X, y, optimizer=fastgd.Adam(0.05), epochs=3, batch_size=8)
    np.testing.assert_array_equal(net.flat_parameters, replay.flat_parameters)
    assert net.optimizer_steps == replay.optimizer_steps
    net.fit(X, y, epochs=2, batch_size=8)  # and it trains on


def test_callbacks_run_in_the_calling_thread():
    X, y = regression_data(n=40)
    seen = []
    net = fastgd.Network([3, 8, 2], random_state=0)
    net.fit(X, y, epochs=4, callbacks=lambda epoch, history, network: seen.append(threading.current_thread()))
    assert seen == [threading.current_thread()] * 4
    caller = []

    def fit_in_a_thread():
        net.fit(X, y, epochs=2, callbacks=lambda epoch, history, network: caller.append(threading.current_thread()))

    worker = threading.Thread(target=fit_in_a_thread)
    worker.start()
    worker.join(TIMEOUT)
    assert caller == [worker, worker]


@pytest.mark.parametrize("rule", ["patience", "no_improvement"])
@pytest.mark.parametrize("monitor", ["auto", "loss", "val_accuracy"])
def test_compiled_stopping_rules_stop_where_the_python_callback_stops(rule, monitor):
    # The same rule inside the compiled loop (early_stopping=EarlyStopping(...)) and in Python
    # (callbacks=[EarlyStopping(...)]): same epochs, same best epoch, same restored parameters.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 6))
    y = (X[:, 0] + 0.5 * rng.normal(size=120) > 0).astype(int)
    results = []
    for where in ("compiled", "python"):
        stopper = fastgd.callbacks.EarlyStopping(patience=2, min_delta=1e-3, monitor=monitor, rule=rule)
        options = dict(early_stopping=stopper) if where == "compiled" else dict(callbacks=[stopper])
        net = fastgd.Network([6, 16, 2], activation="tanh", loss="crossentropy", random_state=0)
        history = net.fit(
            X, y, optimizer=fastgd.Adam(0.05), epochs=60, batch_size=20, shuffle=False, validation_split=0.25, **options
        )
        results.append((history, net))
    (h1, n1), (h2, n2) = results
    assert h1.stopped_epoch == h2.stopped_epoch is not None and h1.best_epoch == h2.best_epoch
    assert h1.loss == h2.loss and h1.val_loss == h2.val_loss and h1.val_accuracy == h2.val_accuracy
    np.testing.assert_array_equal(n1.flat_parameters, n2.flat_parameters)


def test_a_validation_monitor_needs_validation_data():
    X, y = regression_data(n=20)
    net = fastgd.Network([3, 4, 2], random_state=0)
    with pytest.raises(ValueError, match="needs validation data"):
        net.fit(X, y, early_stopping=fastgd.callbacks.EarlyStopping(monitor="val_loss"))
    with pytest.raises(ValueError, match="monitor must be one of"):
        fastgd.callbacks.EarlyStopping(monitor="accuracy")
    with pytest.raises(ValueError, match="rule must be one of"):
        fastgd.callbacks.EarlyStopping(rule="sometimes")
    assert net.epochs_trained == 0


def test_threadpool_limits_cap_the_team_and_threadpool_info_lists_it():
    info = [entry for entry in threadpoolctl.threadpool_info() if entry["user_api"] == "fastgd"]
    assert len(info) == 1 and info[0]["num_threads"] == team_size(None)
    assert info[0]["version"] == fastgd.__version__
    with threadpoolctl.threadpool_limits(1):
        assert team_size(None) == 1 and team_size(8) == 1
        net, _ = fit_big(n_threads=2)  # runs on one thread, with the same result
    assert team_size(None) == min(usable_cores(), team_size(None))
    alone, _ = fit_big(n_threads=1)
    np.testing.assert_array_equal(net.flat_parameters, alone.flat_parameters)


THREADS_CHILD = "import fastgd; from fastgd._threads import team_size; print(team_size(None))"


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({"NUMBA_NUM_THREADS": "1"}, 1),
        ({"OMP_NUM_THREADS": "1"}, 1),
        ({"OMP_NUM_THREADS": "1,2"}, 1),  # OpenMP's nested levels: the first is this one
        ({"OMP_NUM_THREADS": "junk"}, None),  # another library's setting fastgd cannot read: ignored
        ({"FASTGD_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}, 2),
        ({"NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}, 2),
    ],
)
def test_thread_variables_in_order(environment, expected):
    env = {
        k: v for k, v in os.environ.items() if k not in ("FASTGD_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")
    }
    env.update(environment)
    done = subprocess.run(
        [sys.executable, "-c", THREADS_CHILD], capture_output=True, text=True, env=env, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) == min(expected or usable_cores(), usable_cores())


@pytest.mark.skipif(not TWO, reason="needs two cores")
def test_joblib_workers_use_cores_over_n_jobs():
    joblib = pytest.importorskip("joblib")
    found = joblib.Parallel(n_jobs=2)(joblib.delayed(team_size)(None) for _ in range(2))
    assert found == [max(1, usable_cores() // 2)] * 2


EXIT_CHILD = """
import numpy as np, fastgd
rng = np.random.default_rng(0)
X, y = rng.normal(size=(400, 300)), rng.integers(0, 10, size=400)
net = fastgd.Network([300, 256, 10], loss="crossentropy", random_state=3, n_threads=2)
net.fit(X, y, optimizer=fastgd.Adam(1e-3), epochs=2, batch_size=200)
from fastgd.kernels import team
print("OK", any(member.alive for group in team._IDLE.values() for member in group), flush=True)
"""


def test_the_interpreter_exits_cleanly_with_a_parked_team():
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", EXIT_CHILD], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "OK" and "Fatal" not in done.stderr
    if TWO:
        assert done.stdout.split()[1] == "True"
    assert time.perf_counter() - start < TIMEOUT
