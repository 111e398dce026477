"""``fastgd.callbacks``: importable as users write it, and its ``TensorBoard`` callback, whose
event files are read back by TensorBoard's own reader (``EventAccumulator``) and served by the
real ``tensorboard`` server, and compared with the fit's History (never with what the callback
computed). The tests that need the ``tensorboard`` extra are skipped, saying so, without it."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

import fastgd
import fastgd.training.callbacks

try:
    import tensorboard  # noqa: F401
    import tensorboardX  # noqa: F401
except ImportError:
    EXTRA = False
else:
    EXTRA = True
needs_extra = pytest.mark.skipif(not EXTRA, reason='needs the tensorboard extra: pip install "fastgd[tensorboard]"')

RE_EXPORTED = ("Callback", "EarlyStopping", "Checkpoint", "ProgressBar", "FunctionCallback", "StopTraining", "FitInfo")
# Bounds on the tensorboard server test's waits (seconds): it starts in about a second here.
SERVER_START_TIMEOUT, SERVER_STOP_TIMEOUT = 120, 15


# -- fastgd.callbacks as a module ---------------------------------------------------------------


def test_callbacks_import_as_users_write_them():
    from fastgd.callbacks import EarlyStopping, TensorBoard  # noqa: F401

    assert fastgd.callbacks.EarlyStopping is fastgd.training.callbacks.EarlyStopping
    for name in RE_EXPORTED:
        assert getattr(fastgd.callbacks, name) is getattr(fastgd.training.callbacks, name), name
    assert set(fastgd.callbacks.__all__) == set(RE_EXPORTED) | {"TensorBoard"}
    # In a fresh interpreter, as a user's script starts; importing it loads no TensorBoard package.
    code = (
        "import sys; from fastgd.callbacks import EarlyStopping, TensorBoard; import fastgd.training.callbacks as t; "
        "assert EarlyStopping is t.EarlyStopping; print([m for m in ('tensorboardX', 'tensorboard') if m in "
        "sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_missing_extra_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # what an environment without it raises
    with pytest.raises(ImportError, match=re.escape('pip install "fastgd[tensorboard]"')):
        fastgd.callbacks.TensorBoard(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bad_arguments_are_refused_naming_them(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    refusals = [
        (dict(histogram_every=-1), ValueError, "histogram_every"),
        (dict(histogram_every=1.5), TypeError, "histogram_every"),
        (dict(histogram_every=True), TypeError, "histogram_every"),
        (dict(histogram_every="2"), TypeError, "histogram_every"),
        (dict(log_dir=3), TypeError, "log_dir"),
        (dict(log_dir=["runs"]), TypeError, "log_dir"),
        (dict(log_dir=""), ValueError, "log_dir"),
        (dict(log_dir=str(tmp_path / "a\x00b")), ValueError, "log_dir .* NUL"),
        (dict(log_dir=a_file), ValueError, "log_dir .* is a file"),
        (dict(log_dir=a_file / "run"), ValueError, "log_dir .* not a folder"),
    ]
    for arguments, error, message in refusals:
        with pytest.raises(error, match=message):
            fastgd.callbacks.TensorBoard(**arguments)
    assert sorted(os.listdir(tmp_path)) == ["a_file"]  # nothing made


def test_an_unwritable_log_dir_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:
            (locked / "probe").write_text("")
        except OSError:
            pass
        else:  # root writes anyway: a folder no one can make files in, where there is one
            if not os.path.isdir("/proc/self"):
                pytest.skip("this user (root) writes to folders without write permission, and there is no /proc")
            locked = "/proc"
        with pytest.raises(ValueError, match="log_dir .* cannot write"):
            fastgd.callbacks.TensorBoard(os.path.join(locked, "run"))
    finally:
        (tmp_path / "locked").chmod(0o700)


# -- what TensorBoard reads back ------------------------------------------------------------------


def accumulator(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # size_guidance 0: keep every event (the reader samples long runs by default).
    run = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    run.Reload()
    return run


def scalars(run, tag):
    return [(event.step, event.value) for event in run.Scalars(tag)]


def stored(values):
    """Values as a TensorBoard scalar summary holds them: float32 (as PyTorch's writer stores them;
    a finite loss beyond float32's range is stored as infinity)."""
    with np.errstate(over="ignore"):
        return [float(np.float32(value)) for value in values]


def classification():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.8).astype(int) + (X[:, 2] > 0.5)
    return X[:60], y[:60], X[60:], y[60:]


STEPS_PER_EPOCH = 4  # 60 rows in batches of 16: 16, 16, 16, 12


@needs_extra
def test_scalars_are_the_histories_and_continue_across_fits(tmp_path):
    X, y, X_val, y_val = classification()
    net = fastgd.Network([4, 8, 5, 3], activation="tanh", loss="crossentropy", random_state=0)
    board = fastgd.callbacks.TensorBoard(tmp_path / "run")
    schedule = fastgd.schedules.StepDecay(step_size=5, gamma=0.5)
    first = net.fit(
        X,
        y,
        optimizer=fastgd.SGD(lr=0.4),
        epochs=5,
        batch_size=16,
        validation_data=(X_val, y_val),
        track_gradients=True,
        lr_schedule=schedule,
        callbacks=[board],
    )
    # The second fit goes on with the same optimizer (its step count too), without tracking.
    second = net.fit(
        X, y, epochs=3, batch_size=16, validation_data=(X_val, y_val), lr_schedule=schedule, callbacks=[board]
    )
    assert board.writer is None  # closed
    run = accumulator(tmp_path / "run")
    layers = range(3)
    health_tags = {f"{kind}/layer_{i}" for kind in ("gradient_norm", "update_ratio") for i in layers}
    assert (
        set(run.Tags()["scalars"])
        == {"loss/train", "loss/validation", "accuracy/validation", "learning_rate"} | health_tags
    )
    assert run.Tags()["histograms"] == []  # histogram_every=0

    steps = list(range(1, 9))  # the network's epochs: the second fit's go on from the first's
    for tag, field in (
        ("loss/train", "loss"),
        ("loss/validation", "val_loss"),
        ("accuracy/validation", "val_accuracy"),
    ):
        expected = getattr(first, field) + getattr(second, field)
        assert len(expected) == 8
        assert scalars(run, tag) == list(zip(steps, stored(expected))), tag
        assert expected == getattr(net.history, field)
    assert len(set(first.val_accuracy)) > 1  # the accuracy moves: a constant would hide a wrong field

    # StepDecay by hand: epoch e's last step is t = 4e; its rate 0.4 · 0.5^⌊(t − 1)/5⌋.
    rates = [0.4 * 0.5 ** ((STEPS_PER_EPOCH * epoch - 1) // 5) for epoch in steps]
    assert scalars(run, "learning_rate") == list(zip(steps, stored(rates)))
    assert len(set(rates)) > 3

    assert first.health_epochs == [1, 2, 3, 4, 5] and second.health_epochs == []
    for i in layers:
        assert scalars(run, f"gradient_norm/layer_{i}") == list(
            zip(steps[:5], stored(row[i] for row in first.grad_norm))
        )
        assert scalars(run, f"update_ratio/layer_{i}") == list(
            zip(steps[:5], stored(row[i] for row in first.update_ratio))
        )
    assert first.grad_norm[0][0] != first.grad_norm[0][1]  # layers differ: a wrong index would show


@needs_extra
def test_a_regressor_logs_no_accuracy_and_a_fit_without_validation_no_validation(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    y = np.tanh(X @ rng.normal(size=(3, 2)))
    net = fastgd.Network([3, 6, 2], activation="tanh", loss="mse", random_state=1)
    with_validation = net.fit(
        X[:40],
        y[:40],
        optimizer=fastgd.Adam(lr=0.01),
        epochs=4,
        batch_size=8,
        validation_data=(X[40:], y[40:]),
        callbacks=[fastgd.callbacks.TensorBoard(tmp_path / "validated")],
    )
    run = accumulator(tmp_path / "validated")
    assert set(run.Tags()["scalars"]) == {"loss/train", "loss/validation", "learning_rate"}
    assert scalars(run, "loss/validation") == list(zip([1, 2, 3, 4], stored(with_validation.val_loss)))
    assert scalars(run, "learning_rate") == [(step, float(np.float32(0.01))) for step in (1, 2, 3, 4)]

    plain = fastgd.Network([3, 6, 2], activation="tanh", loss="mse", random_state=1)
    history = plain.fit(
        X,
        y,
        optimizer=fastgd.Adam(lr=0.01),
        epochs=3,
        batch_size=8,
        callbacks=[fastgd.callbacks.TensorBoard(tmp_path / "plain")],
    )
    run = accumulator(tmp_path / "plain")
    assert set(run.Tags()["scalars"]) == {"loss/train", "learning_rate"}
    assert scalars(run, "loss/train") == list(zip([1, 2, 3], stored(history.loss)))


@needs_extra
def test_histograms_every_n_epochs_are_the_networks_parameters(tmp_path):
    X, y, _, _ = classification()
    net = fastgd.Network([4, 8, 3], activation="relu", loss="crossentropy", random_state=2)
    snapshots = {}

    def snapshot(epoch, history, network):  # runs before the board, at the same moment
        snapshots[network.epochs_trained] = ([W.copy() for W in network.weights], [b.copy() for b in network.biases])

    board = fastgd.callbacks.TensorBoard(tmp_path / "run", histogram_every=3)
    net.fit(X, y, optimizer=fastgd.Adam(lr=0.05), epochs=7, batch_size=16, callbacks=[snapshot, board])
    net.fit(X, y, epochs=3, batch_size=16, callbacks=[snapshot, board])  # network epochs 8, 9, 10
    run = accumulator(tmp_path / "run")
    expected_tags = {f"{kind}/layer_{i}" for kind in ("weights", "biases") for i in range(2)}
    assert set(run.Tags()["histograms"]) == expected_tags
    for tag in expected_tags:
        kind, layer = tag.split("/layer_")
        events = run.Histograms(tag)
        assert [event.step for event in events] == [3, 6, 9]
        for event in events:
            values = snapshots[event.step][0 if kind == "weights" else 1][int(layer)]
            histogram = event.histogram_value
            assert histogram.num == values.size
            assert (histogram.min, histogram.max) == (values.min(), values.max())
            # The writer sums in its own order: float64 rounding only.
            assert histogram.sum == pytest.approx(values.sum(), rel=1e-12, abs=1e-12)
            assert histogram.sum_squares == pytest.approx((values**2).sum(), rel=1e-12)
            assert sum(histogram.bucket) == values.size
    # The parameters moved between the logged epochs: each histogram is its own epoch's.
    assert (
        run.Histograms("weights/layer_0")[0].histogram_value.sum
        != run.Histograms("weights/layer_0")[1].histogram_value.sum
    )


def hparams_events(path):
    """Every hparams summary in the run's event files, read with TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = []
    for name in sorted(os.listdir(path)):
        for event in EventFileLoader(os.path.join(path, name)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    found.append(
                        (value.tag, plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content))
                    )
    return found


@needs_extra
def test_the_configuration_and_optimizer_are_hparams_once(tmp_path):
    X, y, X_val, y_val = classification()
    net = fastgd.Network([4, 7, 3], activation="tanh", loss="crossentropy", random_state=3, l2=1e-3, dropout=0.25)
    board = fastgd.callbacks.TensorBoard(tmp_path / "run")
    optimizer = fastgd.Adam(lr=0.02, betas=(0.8, 0.99), amsgrad=True)
    net.fit(X, y, optimizer=optimizer, epochs=2, batch_size=16, validation_data=(X_val, y_val), callbacks=[board])
    net.fit(X, y, epochs=2, batch_size=16, validation_data=(X_val, y_val), callbacks=[board])
    found = hparams_events(tmp_path / "run")
    assert sorted(tag for tag, _ in found) == [
        "_hparams_/experiment",
        "_hparams_/session_start_info",
    ]  # once, not per fit
    data = dict(found)
    values = data["_hparams_/session_start_info"].session_start_info.hparams
    expected = {
        "layer_sizes": "[4, 7, 3]",
        "activation": "tanh",
        "output_activation": "softmax",
        "loss": "crossentropy",
        "init": "xavier_uniform",
        "dtype": "float64",
        "backend": "numba",
        "n_threads": "None",
        "l1": 0.0,
        "l2": 1e-3,
        "penalty_per_sample": False,
        "dropout": "[0.25]",
        "loss_options": "{}",
        "optimizer": "Adam",
        "optimizer/lr": 0.02,
        "optimizer/betas": "[0.8, 0.99]",
        "optimizer/eps": 1e-8,
        "optimizer/weight_decay": 0.0,
        "optimizer/amsgrad": True,
    }
    read = {}
    for name, value in values.items():
        read[name] = getattr(value, value.WhichOneof("kind"))
    assert read == expected
    experiment = data["_hparams_/experiment"].experiment
    assert sorted(info.name for info in experiment.hparam_infos) == sorted(expected)
    assert [metric.name.tag for metric in experiment.metric_infos] == [
        "loss/train",
        "loss/validation",
        "accuracy/validation",
    ]
    # TensorBoard's reader files them under its hparams plugin.
    assert set(accumulator(tmp_path / "run").PluginTagToContent("hparams")) == {
        "_hparams_/experiment",
        "_hparams_/session_start_info",
    }


@needs_extra
def test_the_writer_is_flushed_and_closed_however_the_fit_ends(tmp_path):
    X, y, X_val, y_val = classification()
    # Stopped by a callback after epoch 3.
    net = fastgd.Network([4, 8, 3], activation="tanh", loss="crossentropy", random_state=0)
    board = fastgd.callbacks.TensorBoard(tmp_path / "stopped")
    history = net.fit(
        X, y, optimizer=fastgd.SGD(lr=0.1), epochs=10, batch_size=16, callbacks=[board, lambda epoch, h, n: epoch < 3]
    )
    assert board.writer is None and history.stopped_epoch == 3
    assert scalars(accumulator(tmp_path / "stopped"), "loss/train") == list(zip([1, 2, 3], stored(history.loss)))

    # Early stopping inside the compiled loop (no epoch logged late or twice).
    board = fastgd.callbacks.TensorBoard(tmp_path / "early")
    net = fastgd.Network([4, 8, 3], activation="tanh", loss="crossentropy", random_state=0)
    history = net.fit(
        X,
        y,
        optimizer=fastgd.SGD(lr=3.0),
        epochs=200,
        batch_size=60,
        validation_data=(X_val, y_val),
        early_stopping=fastgd.callbacks.EarlyStopping(patience=2),
        callbacks=[board],
    )
    assert history.stopped_epoch is not None and history.stopped_epoch < 200 and board.writer is None
    steps = list(range(1, history.stopped_epoch + 1))
    assert scalars(accumulator(tmp_path / "early"), "loss/validation") == list(zip(steps, stored(history.val_loss)))

    # Diverged: DivergenceError after the finite epochs, which are all there (SGD at lr=100 on
    # this identity network overflows in its second epoch or later: tests/test_robustness.py).
    rng = np.random.default_rng(0)
    net = fastgd.Network([5, 8, 2], activation="identity", random_state=1)
    board = fastgd.callbacks.TensorBoard(tmp_path / "diverged")
    with pytest.raises(fastgd.DivergenceError) as raised:
        net.fit(
            rng.normal(size=(64, 5)),
            rng.normal(size=(64, 2)),
            optimizer=fastgd.SGD(lr=100.0),
            epochs=50,
            batch_size=16,
            callbacks=[board],
        )
    assert board.writer is None
    finite = raised.value.history.loss
    assert len(finite) >= 1
    assert scalars(accumulator(tmp_path / "diverged"), "loss/train") == list(
        zip(range(1, len(finite) + 1), stored(finite))
    )


@needs_extra
def test_log_dir_none_is_runs_date_time_host(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    board = fastgd.callbacks.TensorBoard()
    assert re.fullmatch(
        r"runs/[A-Z][a-z]{2}\d{2}_\d{2}-\d{2}-\d{2}_" + re.escape(socket.gethostname()),
        board.log_dir.replace(os.sep, "/"),
    )
    assert not (tmp_path / "runs").exists()  # made when the fit begins
    X, y, _, _ = classification()
    history = fastgd.Network([4, 3], loss="crossentropy", random_state=0).fit(X, y, epochs=2, callbacks=[board])
    assert scalars(accumulator(tmp_path / board.log_dir), "loss/train") == list(zip([1, 2], stored(history.loss)))


@needs_extra
def test_a_log_dir_gone_bad_is_refused_before_training(tmp_path):
    board = fastgd.callbacks.TensorBoard(tmp_path / "parent" / "run")
    (tmp_path / "parent").write_text("")  # the folder's place taken by a file since
    X, y, _, _ = classification()
    net = fastgd.Network([4, 3], loss="crossentropy", random_state=0)
    before = net.flat_parameters.copy()
    with pytest.raises(ValueError, match="log_dir .* not a folder"):
        net.fit(X, y, epochs=2, callbacks=[board])
    assert np.array_equal(net.flat_parameters, before) and net.epochs_trained == 0 and net.history.loss == []


@needs_extra
def test_learning_rate_follows_the_adaptive_division(tmp_path):
    X, y, X_val, y_val = classification()
    net = fastgd.Network([4, 8, 3], activation="tanh", loss="crossentropy", random_state=0)
    stopping = fastgd.callbacks.EarlyStopping(patience=1, lr_factor=5.0, min_lr=1e-9)
    history = net.fit(
        X,
        y,
        optimizer=fastgd.SGD(lr=5.0),
        epochs=6,
        batch_size=60,
        validation_data=(X_val, y_val),
        early_stopping=stopping,
        callbacks=[fastgd.callbacks.TensorBoard(tmp_path / "run")],
    )
    # Keras's patience rule by hand on the recorded validation losses: a division after an epoch
    # applies to the next epoch's steps.
    best, waited, scale, rates = np.inf, 0, 1.0, []
    for value in history.val_loss:
        rates.append(5.0 * scale)
        better = value < best
        waited = 0 if better else waited + 1
        if waited >= 1:
            scale, waited = scale / 5.0, 0
        best = min(best, value)
    assert len(set(rates)) > 2
    assert scalars(accumulator(tmp_path / "run"), "learning_rate") == list(zip(range(1, 7), stored(rates)))


# -- the real tensorboard server --------------------------------------------------------------------


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@needs_extra
def test_the_tensorboard_server_serves_the_scalars(tmp_path):
    X, y, X_val, y_val = classification()
    net = fastgd.Network([4, 8, 3], activation="tanh", loss="crossentropy", random_state=0)
    history = net.fit(
        X,
        y,
        optimizer=fastgd.Adam(lr=0.01),
        epochs=6,
        batch_size=16,
        validation_data=(X_val, y_val),
        callbacks=[fastgd.callbacks.TensorBoard(tmp_path / "runs" / "digits")],
    )
    port = free_port()
    # --load_fast=false: the Python reader, not the separate Rust data server.
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(tmp_path / "runs"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--load_fast=false",
        "--reload_interval",
        "1",
    ]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wanted = {
        "loss/train": history.loss,
        "loss/validation": history.val_loss,
        "accuracy/validation": history.val_accuracy,
    }
    try:
        served, deadline = {}, time.monotonic() + SERVER_START_TIMEOUT
        while len(served) < len(wanted):
            assert server.poll() is None, f"tensorboard exited with {server.returncode}"
            assert time.monotonic() < deadline, (
                f"tensorboard served {sorted(served)} of {sorted(wanted)} in {SERVER_START_TIMEOUT} s"
            )
            try:
                for tag in wanted:
                    query = urllib.parse.urlencode({"run": "digits", "tag": tag})
                    points = get_json(f"{base}/data/plugin/scalars/scalars?{query}")
                    if len(points) == len(wanted[tag]):  # loaded (the server reads the files in the background)
                        served[tag] = points
            except (urllib.error.URLError, ConnectionError, TimeoutError):  # not listening yet, or not loaded: 400
                pass
            time.sleep(0.25)
        assert "digits" in get_json(f"{base}/data/runs")
        for tag, values in wanted.items():
            # [wall_time, step, value] per point.
            assert [(step, value) for _, step, value in served[tag]] == list(zip(range(1, 7), stored(values))), tag
    finally:
        server.terminate()
        try:
            output, _ = server.communicate(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate(timeout=SERVER_STOP_TIMEOUT)
    assert server.returncode is not None
    assert b"TensorBoard" in output  # its own start-up line: the server that answered was ours
