"""Every failure mode fastgd promises to survive, one section each.

* Bad input: property-based tests here (any shape, dtype, strides, values, hyper-parameters);
  the exact messages, argument by argument, are in ``test_bad_input.py``.
* Divergence: a huge learning rate, for every optimizer and both backends.
* Interruption: SIGINT sent to a training subprocess.
* Checkpoints: atomic writes, kill -9 at random moments, bitwise resume.
* Threads and processes: two Python threads at once; fork, spawn and forkserver.
* Compile cache: a read-only install, a corrupt cache, a stale cache.
* Kernels under Numba's bounds checking (CI runs ``test_kernels.py`` with NUMBA_BOUNDSCHECK=1).
"""

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
from _helpers import assert_same_state, junk, regression_data, state_of, train_parallel_sized
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastgd
from fastgd.optimizers import OPTIMIZERS, Adam

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPROCESS_TIMEOUT = 300  # seconds; generous for a cold compile on a loaded 2-core machine


def run_python(code, *args, env=None, cwd=REPO, timeout=SUBPROCESS_TIMEOUT, check=True):
    """Run ``code`` in a fresh interpreter; returns the CompletedProcess."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    if check:
        assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


# ---------------------------------------------------------------------------------------------
# Bad input, property-based: whatever arrives, a result of the right shape and dtype or a
# ValueError/TypeError, and after an error the network exactly as it was.

ARRAY_DTYPES = st.sampled_from(
    [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_, np.complex64, "U3", "M8[s]", object]
)


@st.composite
def any_array(draw, max_dims=3):
    """Arrays of any rank, dtype and size (empty included), with special values, sometimes
    non-contiguous (a strided or transposed view) or read-only."""
    dtype = np.dtype(draw(ARRAY_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=6))
    if dtype.kind == "O":
        array = np.empty(shape, dtype=object)
        array.fill(draw(st.sampled_from([1.0, "a", None, [1, 2]])))
    elif dtype.kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=dtype.itemsize * 8)
        array = draw(hnp.arrays(dtype, shape, elements=elements))
    else:
        array = draw(hnp.arrays(dtype, shape))
    view = draw(st.sampled_from(["as is", "strided", "transposed"]))
    if view == "strided" and array.ndim >= 1:
        array = np.repeat(array, 2, axis=0)[::2]
    elif view == "transposed":
        array = np.ascontiguousarray(array.T).T
    if draw(st.booleans()):
        array.flags.writeable = False
    return array


def valid_inputs(draw, n_in, n_out, dtype):
    """Finite, well-shaped data in assorted dtypes and memory layouts."""
    rows = draw(st.integers(1, 9))
    X = draw(hnp.arrays(dtype, (rows, n_in), elements=st.floats(-3, 3, width=32)))
    Y = draw(hnp.arrays(dtype, (rows, n_out), elements=st.floats(0, 1, width=32)))
    if draw(st.booleans()):
        X = np.asfortranarray(X)
    if draw(st.booleans()):
        X.flags.writeable = False
    return X, Y


@pytest.fixture(scope="module", params=["numba", "numpy"])
def trained_net(request):
    X, y = regression_data(n=20, n_in=3, n_out=2)
    net = fastgd.Network([3, 5, 2], random_state=0, backend=request.param)
    net.fit(X, y, optimizer=Adam(lr=0.01), epochs=2, batch_size=8)
    return net


EXPECTED_ERRORS = (ValueError, TypeError)
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(X=any_array())
def test_predict_gives_a_result_or_a_clear_error(trained_net, X):
    before = state_of(trained_net)
    try:
        out = trained_net.predict(X)
    except EXPECTED_ERRORS as error:
        assert str(error)
    else:
        assert out.shape == (X.shape[0], 2) and out.dtype == trained_net.dtype
        assert np.isfinite(out).all()
    assert_same_state(trained_net, before)


@PROPERTY_SETTINGS
@given(X=any_array(), y=any_array(max_dims=2), weight=st.one_of(st.none(), any_array(max_dims=2)))
def test_loss_and_gradients_give_a_result_or_a_clear_error(trained_net, X, y, weight):
    before = state_of(trained_net)
    for method in ("loss", "gradients"):
        try:
            result = getattr(trained_net, method)(X, y, sample_weight=weight)
        except EXPECTED_ERRORS as error:
            assert str(error)
        else:
            if method == "loss":
                assert isinstance(result, float)
            else:
                assert [g.shape for g in result.weights] == [w.shape for w in trained_net.weights]
                assert all(g.dtype == trained_net.dtype for g in result.weights + result.biases)
    assert_same_state(trained_net, before)


@PROPERTY_SETTINGS
@given(X=any_array(), y=any_array(max_dims=2))
def test_fit_with_any_arrays_trains_or_leaves_the_network_unchanged(trained_net, X, y):
    net = trained_net.copy()
    before = state_of(net)
    try:
        history = net.fit(X, y, epochs=1, batch_size=4)
    except EXPECTED_ERRORS as error:
        assert str(error)
        assert_same_state(net, before)
    except fastgd.DivergenceError:
        # Finite but enormous values (1e308) can overflow in training; that is the documented
        # divergence path, which puts the parameters back to their finite state.
        assert np.isfinite(net.flat_parameters).all()
    else:
        assert len(history.loss) == 1 and np.isfinite(history.loss[0])


JUNK = junk()
# Values of each fit argument to try besides the junk above; epochs stays small so that a
# legitimate value does not train for hours.
FIT_ARGUMENTS = {
    "epochs": st.one_of(st.integers(-3, 2), st.floats(), st.text(max_size=2), st.none()),
    "batch_size": st.one_of(JUNK, st.integers(-3, 10**12)),
    "shuffle": JUNK,
    "optimizer": st.one_of(JUNK, st.sampled_from(["sgd", "adam", "rprop"])),
    "patience": JUNK,
    "min_delta": JUNK,
    "validation_split": st.one_of(JUNK, st.floats(-1, 2)),
    "early_stopping": JUNK,
    "callbacks": JUNK,
    "verbose": JUNK,
    "lr_schedule": JUNK,
    "warm_start": JUNK,
    "checkpoint_every": JUNK,
    "on_divergence": st.one_of(JUNK, st.sampled_from(["raise", "warn", "ignore"])),
    "sample_weight": st.one_of(JUNK, any_array(max_dims=2)),
    "validation_data": st.one_of(JUNK, st.tuples(any_array(), any_array(max_dims=2))),
}


@PROPERTY_SETTINGS
@given(data=st.data())
def test_fit_with_any_arguments_trains_or_leaves_the_network_unchanged(trained_net, data):
    net = trained_net.copy()
    X, y = regression_data(n=12, n_in=3, n_out=2)
    name = data.draw(st.sampled_from(sorted(FIT_ARGUMENTS)), label="argument")
    value = data.draw(FIT_ARGUMENTS[name], label=name)
    before = state_of(net)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "warn" on divergence, if it comes to that
            history = net.fit(X, y, **{name: value})
    except EXPECTED_ERRORS as error:
        assert name.split("_")[0] in str(error) or name in ("sample_weight", "validation_data"), str(error)
        assert_same_state(net, before)
    else:
        assert all(np.isfinite(history.loss))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_constructors_take_any_value_or_name_the_bad_argument(data):
    names = [
        "layer_sizes",
        "activation",
        "output_activation",
        "loss",
        "init",
        "dtype",
        "random_state",
        "backend",
        "n_threads",
        "l1",
        "l2",
    ]
    name = data.draw(st.sampled_from(names), label="argument")
    value = data.draw(st.one_of(JUNK, st.lists(st.integers(-2, 4), max_size=4)), label=name)
    kwargs = {"layer_sizes": [3, 4, 2], name: value}
    try:
        net = fastgd.Network(**kwargs)
    except EXPECTED_ERRORS as error:
        assert name.split("_")[0] in str(error), str(error)
    else:
        assert np.isfinite(net.flat_parameters).all()


@PROPERTY_SETTINGS
@given(data=st.data())
def test_optimizers_take_any_value_or_name_the_bad_argument(data):
    cls = data.draw(st.sampled_from(sorted(OPTIMIZERS.values(), key=lambda c: c.__name__)), label="optimizer")
    name = data.draw(st.sampled_from(list(cls().get_config())), label="argument")
    value = data.draw(JUNK, label=name)
    try:
        optimizer = cls(**{name: value})
    except EXPECTED_ERRORS as error:
        assert name.split("_")[0] in str(error), str(error)
    else:
        assert optimizer.get_config()[name] is not None or value is None


@PROPERTY_SETTINGS
@given(eps=JUNK, tiny=JUNK, method=st.one_of(JUNK, st.just("central")))
def test_gradient_check_takes_any_value_or_names_the_bad_argument(trained_net, eps, tiny, method):
    X, y = regression_data(n=4, n_in=3, n_out=2)
    before = state_of(trained_net)
    try:
        result = fastgd.gradient_check(trained_net, X, y, eps=eps, tiny=tiny, method=method)
    except EXPECTED_ERRORS as error:
        assert any(word in str(error) for word in ("eps", "tiny", "method")), str(error)
    else:
        assert result.max_relative_error >= 0
    assert_same_state(trained_net, before)


def test_load_refuses_anything_that_is_not_a_network_file(tmp_path, trained_net):
    path = tmp_path / "net.npz"
    trained_net.save(path)
    data = path.read_bytes()
    cases = {
        "empty": b"",
        "text": b"hello",
        "truncated": data[: len(data) // 2],
        "flipped": data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:],
    }
    for name, content in cases.items():
        bad = tmp_path / f"{name}.npz"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match="corrupt|not a fastgd|unreadable|does not match|truncated"):
            fastgd.load(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastgd network file"):
        fastgd.load(tmp_path / "other.npz")
    with pytest.raises(TypeError, match="config and state must be dicts"):
        fastgd.persistence.write(tmp_path / "x.npz", "not a network", {})


# ---------------------------------------------------------------------------------------------
# Divergence


def diverging_setup(dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5))
    Y = rng.normal(size=(64, 2))

    def make(backend):
        # Identity units saturate nowhere, so a huge step overflows the loss instead of parking
        # the network on a flat sigmoid plateau.
        return fastgd.Network([5, 8, 2], activation="identity", dtype=dtype, random_state=1, backend=backend)

    return X, Y, make


# Large enough that float32 overflows inside the network, not only in the loss (which the NumPy
# reference sums in float64): 1e6 lets Adam's float32 reference run stay finite for 50 epochs.
HUGE_LR = {"float32": 1e15, "float64": 1e200}


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_huge_learning_rate_stops_at_the_last_finite_epoch(name, dtype, backend):
    X, Y, make = diverging_setup(dtype)
    net = make(backend)
    net.fit(X, Y, optimizer=OPTIMIZERS[name](lr=1e-3), epochs=3, batch_size=16)  # three good epochs
    good = state_of(net)
    with pytest.raises(fastgd.DivergenceError, match=r"diverged in epoch \d+ .*lr=.* too large") as caught:
        net.fit(X, Y, optimizer=OPTIMIZERS[name](lr=HUGE_LR[dtype]), epochs=50, batch_size=16)
    error = caught.value
    finite_epochs = error.epoch - 1
    assert len(error.history.loss) == finite_epochs and np.isfinite(error.history.loss).all()
    assert net.epochs_trained == 3 + finite_epochs == len(net.history.loss)
    assert np.isfinite(net.flat_parameters).all()
    assert all(np.isfinite(v).all() for v in net.optimizer_state.values())
    if finite_epochs == 0:
        np.testing.assert_array_equal(net.flat_parameters, good[0])
        assert net.history.loss == good[5]["loss"]
    # The network is exactly where the finite epochs, replayed without the diverging one, lead.
    replay = make(backend)
    replay.fit(X, Y, optimizer=OPTIMIZERS[name](lr=1e-3), epochs=3, batch_size=16)
    if finite_epochs:
        replay.fit(X, Y, optimizer=OPTIMIZERS[name](lr=HUGE_LR[dtype]), epochs=finite_epochs, batch_size=16)
    np.testing.assert_array_equal(net.flat_parameters, replay.flat_parameters)
    # The new optimizer's state starts fresh when the fit starts (before anything diverges).
    assert net.optimizer_steps == (replay.optimizer_steps if finite_epochs else 0)
    assert net.history.loss == replay.history.loss


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_divergence_after_good_epochs_of_the_same_fit(backend):
    # SGD at lr=100 on this float64 problem stays finite for one epoch and overflows in the
    # second (measured), so the restored state is the end of an epoch inside the same call.
    X, Y, make = diverging_setup("float64")
    net = make(backend)
    with pytest.raises(fastgd.DivergenceError) as caught:
        net.fit(X, Y, optimizer=fastgd.SGD(lr=100.0), epochs=50, batch_size=16)
    assert caught.value.epoch >= 2
    replay = make(backend)
    replay.fit(X, Y, optimizer=fastgd.SGD(lr=100.0), epochs=caught.value.epoch - 1, batch_size=16)
    np.testing.assert_array_equal(net.flat_parameters, replay.flat_parameters)
    assert net.history.loss == replay.history.loss == caught.value.history.loss


def test_on_divergence_warn_stops_with_a_warning(tmp_path):
    X, Y, make = diverging_setup("float32")
    net = make("numba")
    path = tmp_path / "checkpoint.npz"
    with pytest.warns(fastgd.DivergenceWarning, match=r"diverged in epoch \d+ of this fit"):
        history = net.fit(
            X, Y, optimizer=fastgd.SGD(lr=1e6), epochs=50, on_divergence="warn", validation_split=0.25, checkpoint=path
        )
    assert history.stopped_epoch == len(history.loss) == len(history.val_loss) < 50
    # (The validation loss of the last finite epoch may overflow: it is measured as it is.)
    assert np.isfinite(history.loss).all()
    assert np.isfinite(net.flat_parameters).all()
    np.testing.assert_array_equal(fastgd.load(path).flat_parameters, net.flat_parameters)


def test_divergence_message_points_at_unscaled_inputs():
    X, Y, make = diverging_setup("float32")
    net = make("numba")
    with pytest.raises(fastgd.DivergenceError, match=r"scale the inputs \(\|X\| reaches 1e\+15\)"):
        net.fit(X * 1e15 / np.abs(X).max(), Y, optimizer=fastgd.SGD(lr=0.1), epochs=5)


# ---------------------------------------------------------------------------------------------
# Interruption: SIGINT to a training subprocess

INTERRUPT_CHILD = """
import os, sys, numpy as np, fastgd
case, checkpoint = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
if case == "small":  # a small network with validation and a checkpoint: every epoch in one call
    sizes, rows, batch, backend = [8, 16, 1], 256, 16, "numba"
else:  # a larger one: stopped inside the call, before a batch
    sizes, rows, batch, backend = [64, 256, 256, 8], 2048, 64, "numpy" if case == "numpy" else "numba"
X = rng.normal(size=(rows, sizes[0])).astype(np.float32)
Y = rng.uniform(size=(rows, sizes[-1])).astype(np.float32)
extra = dict(validation_data=(X[:64], Y[:64])) if case == "small" else {}

def make():
    return fastgd.Network(sizes, dtype="float32", random_state=3, backend=backend)

make().fit(X, Y, optimizer=fastgd.Adam(lr=1e-3), epochs=1, batch_size=batch, **extra)  # compile
net = make()
print("TRAINING", flush=True)
# With a checkpoint (a callback) the call runs in this thread and visits Python for it, and for
# the heartbeats that let the handler run; without ("plain") it runs in a helper thread.
saving = {} if case == "plain" else dict(checkpoint=checkpoint, checkpoint_every=10**5)
try:
    net.fit(X, Y, optimizer=fastgd.Adam(lr=1e-3), epochs=10**6, batch_size=batch, **saving, **extra)
    sys.exit("fit finished: the interrupt was lost")
except KeyboardInterrupt:
    pass
k = net.epochs_trained
assert k >= 1, k
assert len(net.history.loss) == k, (len(net.history.loss), k)
if extra:
    assert len(net.history.val_loss) == k
assert net.optimizer_steps == k * (-(-rows // batch))
replay = make()
replay.fit(X, Y, optimizer=fastgd.Adam(lr=1e-3), epochs=k, batch_size=batch, **extra)
assert np.array_equal(net.flat_parameters, replay.flat_parameters)
for key, value in net.optimizer_state.items():
    assert np.array_equal(value, replay.optimizer_state[key]), key
assert net.history.loss == replay.history.loss
if saving:
    saved = fastgd.load(checkpoint)
    assert saved.epochs_trained == k and np.array_equal(saved.flat_parameters, net.flat_parameters)
print("OK", k, flush=True)
"""


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
@pytest.mark.parametrize("case", ["numba", "plain", "small", "numpy"])
def test_sigint_leaves_the_last_completed_epoch_and_reraises(tmp_path, case):
    checkpoint = tmp_path / "interrupted.npz"
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPT_CHILD, case, str(checkpoint)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout.readline().strip() == "TRAINING", child.stderr.read()
        time.sleep(1.5)  # several epochs in, in the middle of one
        sent = time.perf_counter()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        child.kill()
    assert child.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert out.startswith("OK"), out
    assert time.perf_counter() - sent < SUBPROCESS_TIMEOUT


def test_sigint_handler_is_restored_after_fit():
    X, y = regression_data()
    net = fastgd.Network([3, 4, 2], random_state=0)
    net.fit(X, y, epochs=2)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_a_ctrl_c_during_the_last_checkpoint_write_is_raised_not_lost(tmp_path, monkeypatch):
    # The race the stress test (tests/stress_interrupt.py) found: a SIGINT whose handler runs
    # after fit's last look at the request (here: while on_fit_end writes the last checkpoint)
    # was dropped when the handler was put back, and fit returned as if nothing had happened.
    import fastgd.persistence

    X, y = regression_data()
    net = fastgd.Network([3, 4, 2], random_state=0)
    original, writes = fastgd.persistence.write, []

    def write_with_a_ctrl_c(*args, **kwargs):
        writes.append(net.epochs_trained)
        if len(writes) == 2:  # on_fit_end's write (on_epoch_end wrote epoch 2)
            signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the write
        return original(*args, **kwargs)

    monkeypatch.setattr(fastgd.persistence, "write", write_with_a_ctrl_c)
    checkpoint = tmp_path / "last.npz"
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=3, callbacks=[fastgd.callbacks.Checkpoint(checkpoint, every=2)])
    # The fit had finished its epochs; the checkpoint holds them whole, and the handler is back.
    assert writes == [2, 3] and net.epochs_trained == 3 == len(net.history.loss)
    assert fastgd.load(checkpoint).epochs_trained == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_callback_can_still_be_interrupted():
    # While user code runs, Ctrl-C raises at once (simulated: the callback raises it), and the
    # network is consistent: the epoch that ran is recorded.
    X, y = regression_data()
    net = fastgd.Network([3, 4, 2], random_state=0)

    def callback(epoch, history, network):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=5, callbacks=callback)
    assert net.epochs_trained == 2 == len(net.history.loss)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_checkpoints_are_written_every_n_epochs_and_at_the_end(tmp_path):
    X, y = regression_data()
    path = tmp_path / "ckpt.npz"
    seen = []

    def callback(epoch, history, network):
        seen.append(fastgd.load(path).epochs_trained if path.exists() else None)

    net = fastgd.Network([3, 4, 2], random_state=0)
    net.fit(
        X, y, optimizer=Adam(lr=0.01), epochs=7, batch_size=10, checkpoint=path, checkpoint_every=3, callbacks=callback
    )
    assert seen == [None, None, 3, 3, 3, 6, 6]  # written before the callbacks of its epoch run
    final = fastgd.load(path)
    assert final.epochs_trained == 7
    np.testing.assert_array_equal(final.flat_parameters, net.flat_parameters)
    assert final.history.loss == net.history.loss
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary files left


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_resuming_from_a_checkpoint_is_bitwise_the_uninterrupted_run(tmp_path, backend):
    X, y = regression_data(n=40)
    kwargs = dict(batch_size=8)
    straight = fastgd.Network([3, 6, 2], random_state=0, backend=backend)
    straight.fit(X, y, optimizer=Adam(lr=0.01), epochs=12, lr_schedule=fastgd.schedules.Cosine(40), **kwargs)

    first = fastgd.Network([3, 6, 2], random_state=0, backend=backend)
    path = tmp_path / "ckpt.npz"
    first.fit(
        X, y, optimizer=Adam(lr=0.01), epochs=5, checkpoint=path, lr_schedule=fastgd.schedules.Cosine(40), **kwargs
    )
    resumed = fastgd.load(path)
    resumed.fit(X, y, epochs=12 - resumed.epochs_trained, lr_schedule=fastgd.schedules.Cosine(40), **kwargs)
    np.testing.assert_array_equal(resumed.flat_parameters, straight.flat_parameters)
    for key, value in straight.optimizer_state.items():
        np.testing.assert_array_equal(resumed.optimizer_state[key], value)
    assert resumed.history.loss == straight.history.loss


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    X, y = regression_data()
    net = fastgd.Network([3, 4, 2], random_state=0)
    path = tmp_path / "ckpt.npz"
    net.fit(X, y, epochs=2, checkpoint=path)
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        net.fit(X, y, epochs=1, checkpoint=path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]
    # fit raised after its epoch was complete: the network itself is consistent.
    assert net.epochs_trained == 3 == len(net.history.loss)


def test_bad_checkpoint_arguments(tmp_path):
    X, y = regression_data()
    net = fastgd.Network([3, 4, 2], random_state=0)
    with pytest.raises(ValueError, match="checkpoint: folder .* does not exist"):
        net.fit(X, y, checkpoint=tmp_path / "missing" / "c.npz")
    with pytest.raises(ValueError, match="checkpoint must be a file path"):
        net.fit(X, y, checkpoint=tmp_path)
    with pytest.raises(TypeError, match="checkpoint must be a file path"):
        net.fit(X, y, checkpoint=3)
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        net.fit(X, y, checkpoint=tmp_path / "c.npz", checkpoint_every=0)
    assert net.epochs_trained == 0


KILL_CHILD = """
import os, sys, numpy as np, fastgd
path, total = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
X = rng.normal(size=(256, 16)); Y = rng.uniform(size=(256, 4))
if os.path.exists(path):
    net, optimizer = fastgd.load(path), None
else:
    net, optimizer = fastgd.Network([16, 32, 4], random_state=0), fastgd.Adam(lr=1e-3)
print("READY", net.epochs_trained, flush=True)
net.fit(X, Y, optimizer=optimizer, epochs=total - net.epochs_trained, batch_size=32, checkpoint=path)
print("DONE", flush=True)
"""


@pytest.mark.skipif(os.name != "posix", reason="kill -9")
def test_kill_9_never_leaves_a_broken_checkpoint_and_resuming_is_bitwise(tmp_path):
    total = 1500
    path = tmp_path / "ckpt.npz"
    rng = np.random.default_rng(2026)
    trained = []
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD, str(path), str(total)], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        assert child.stdout.readline().startswith("READY")
        previous = path.stat().st_mtime_ns if path.exists() else None
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while (not path.exists() or path.stat().st_mtime_ns == previous) and time.monotonic() < deadline:
            time.sleep(0.005)  # until this round has written a checkpoint of its own
        time.sleep(rng.uniform(0.0, 0.3))
        child.kill()  # SIGKILL: no handler, no cleanup, possibly mid-write
        child.wait(timeout=60)
        if path.exists():
            net = fastgd.load(path)  # never torn: always a whole checkpoint
            assert net.epochs_trained == len(net.history.loss)
            assert np.isfinite(net.flat_parameters).all()
            trained.append(net.epochs_trained)
    assert len(trained) == 5 and trained == sorted(trained), trained  # each round resumed, none went back
    assert trained[-1] < total, "the rounds should have been killed before the end"
    run_python(KILL_CHILD, str(path), str(total))  # the last round runs to the end
    resumed = fastgd.load(path)
    rng0 = np.random.default_rng(0)
    X, Y = rng0.normal(size=(256, 16)), rng0.uniform(size=(256, 4))
    straight = fastgd.Network([16, 32, 4], random_state=0)
    straight.fit(X, Y, optimizer=Adam(lr=1e-3), epochs=total, batch_size=32)
    assert resumed.epochs_trained == total
    np.testing.assert_array_equal(resumed.flat_parameters, straight.flat_parameters)
    assert resumed.history.loss == straight.history.loss


# ---------------------------------------------------------------------------------------------
# Threads and processes


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_two_threads_training_at_once_match_training_one_after_the_other(backend):
    # Big enough for the parallel matrix-product kernels; per-epoch chunks (validation) make
    # the two fits take turns many times.
    expected = [train_parallel_sized(seed, backend) for seed in (1, 2)]
    results = [None, None]
    errors = []

    def work(i):
        try:
            results[i] = train_parallel_sized(i + 1, backend)
        except BaseException as error:  # reported by the test thread below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SUBPROCESS_TIMEOUT)
    assert not errors, errors
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_training_in_a_child_process(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} is not available here")
    expected = train_parallel_sized(7, "numba")  # the parallel layer is running in this process
    with multiprocessing.get_context(method).Pool(1) as pool:
        got = pool.apply_async(train_parallel_sized, (7, "numba")).get(timeout=SUBPROCESS_TIMEOUT)
    np.testing.assert_array_equal(got, expected)


def test_show_config_reports_the_threading_and_cache_and_no_numba_layer_runs():
    import io

    import numba

    train_parallel_sized(3, "numba")
    buffer = io.StringIO()
    fastgd.show_config(file=buffer)
    text = buffer.getvalue()
    for field in (
        "numba",
        "threading",
        "own team of threads",
        "compile cache",
        "environment",
        "threadpool",
        "fastmath flags",
    ):
        assert field in text
    # The promise: fastgd's kernels run on its own threads, so no Numba threading layer (whose
    # choice depends on what the environment can load) was ever started.
    with pytest.raises(ValueError, match="not initialized"):
        numba.threading_layer()


# ---------------------------------------------------------------------------------------------
# Compile cache: read-only install, corrupt files, stale entries

CACHE_CHILD = """
import json, sys, warnings
import numpy as np
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import fastgd
    from fastgd.kernels import passes, train
    from fastgd.datasets import xor
    X, y = xor()
    net = fastgd.Network([2, 4, 1], loss="sse", init="uniform", random_state=np.random.RandomState(42))
    net.fit(X, y, optimizer=fastgd.SGD(lr=0.1), epochs=10000)
stats = train.train_loop.stats
print(json.dumps({
    "fastgd": fastgd.__file__,
    "hits": sum(stats.cache_hits.values()),
    "misses": sum(stats.cache_misses.values()),
    "pieces": {f"{kind}:{dtype}": bool(f.cache_hits) for (kind, dtype), f in passes._COMPILED.items()},
    "prediction": net.predict(X).ravel().tolist(),
    "warnings": [str(w.message) for w in caught],
}))
"""


def copy_of_the_package(root):
    """fastgd laid out as installed (kernels inside it), without any compiled cache."""
    site = root / "site"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.join(REPO, "fastgd"), site / "fastgd", ignore=ignore)
    shutil.copytree(os.path.join(REPO, "kernels"), site / "fastgd" / "kernels", ignore=ignore)
    return site


def set_writable(folder, writable):
    for dirpath, _, filenames in os.walk(folder):
        for name in [*filenames, "."]:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) or os.path.isdir(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | 0o200 if writable else mode & ~0o222)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_compile_cache_read_only_install_corrupt_and_stale(tmp_path):
    site = copy_of_the_package(tmp_path)
    kernels_folder = site / "fastgd" / "kernels"
    # An install folder Numba cannot write, even as root (who ignores permission bits): a file
    # where its __pycache__ folder would go. Likewise for the per-user cache (~/.cache).
    (kernels_folder / "__pycache__").write_text("not a folder")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("not a folder")
    set_writable(site, False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_", "FASTGD_"))}
    # (no helper process: each run's own cache hits and misses are counted)
    env.update(PYTHONPATH=str(site), HOME=str(home), FASTGD_COMPILE_HELPER="0")

    def run(**extra):
        return json.loads(run_python(CACHE_CHILD, env=dict(env, **extra), cwd=tmp_path).stdout)

    expected = fastgd.Network([2, 4, 1], loss="sse", init="uniform", random_state=np.random.RandomState(42))
    from fastgd.datasets import xor

    X, y = xor()
    expected.fit(X, y, optimizer=fastgd.SGD(lr=0.1), epochs=10000)
    try:
        # Nowhere to write Numba's cache: compiled without it, with one warning saying so.
        nowhere = run()
        assert nowhere["fastgd"].startswith(str(site)), nowhere["fastgd"]
        assert nowhere["hits"] == 0 and nowhere["pieces"] and not any(nowhere["pieces"].values())
        assert any("without Numba's on-disk cache" in w for w in nowhere["warnings"]), nowhere["warnings"]
        np.testing.assert_allclose(nowhere["prediction"], expected.predict(X).ravel(), rtol=1e-12)

        cache = tmp_path / "cache"
        cold = run(NUMBA_CACHE_DIR=str(cache))
        assert cold["misses"] == 1 and cold["hits"] == 0 and not cold["warnings"], cold
        warm = run(NUMBA_CACHE_DIR=str(cache))  # Numba's cache, where the user points it
        assert warm["hits"] == 1 and warm["misses"] == 0 and all(warm["pieces"].values()), warm
        assert not warm["warnings"], warm["warnings"]
        assert warm["prediction"] == cold["prediction"] == nowhere["prediction"]

        for folder, _, names in os.walk(cache):  # damage every index and data file
            for name in names:
                with open(os.path.join(folder, name), "r+b") as file:
                    file.truncate(max(os.path.getsize(file.name) // 3, 1))
        damaged = run(NUMBA_CACHE_DIR=str(cache))
        assert any("discarded an unreadable compile-cache entry" in w for w in damaged["warnings"]), damaged["warnings"]
        assert damaged["prediction"] == cold["prediction"]

        set_writable(site, True)
        shutil.rmtree(cache)
        run(NUMBA_CACHE_DIR=str(cache))
        # An edit to a kernel module without new stamps: the cache is off for the process (never
        # code compiled from the old sources), with a warning saying how to restamp.
        with open(kernels_folder / "optim.py", "a") as file:
            file.write("\n# edited\n")
        stale = run(NUMBA_CACHE_DIR=str(cache))
        assert any("changed since their stamps" in w for w in stale["warnings"]), stale["warnings"]
        assert stale["hits"] == 0 and stale["prediction"] == cold["prediction"]
        # Restamped: the loop (whose update the optimizers' declarations are written into) is
        # compiled again, the passes (built without optim.py) still come from the cache.
        restamp = subprocess.run(
            [sys.executable, "-m", "fastgd.kernels.stamps"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )
        assert restamp.returncode == 0, restamp.stderr
        edited = run(NUMBA_CACHE_DIR=str(cache))
        assert edited["misses"] == 1 and edited["hits"] == 0 and edited["pieces"] and all(edited["pieces"].values()), (
            edited
        )
        # An edit to a module the loop and the passes are built from (the team's barrier is
        # compiled into them) recompiles them, although train.py and passes.py did not change.
        with open(kernels_folder / "team.py", "a") as file:
            file.write("\n# edited\n")
        subprocess.run(
            [sys.executable, "-m", "fastgd.kernels.stamps"],
            env=env,
            cwd=tmp_path,
            timeout=SUBPROCESS_TIMEOUT,
            check=True,
        )
        edited = run(NUMBA_CACHE_DIR=str(cache))
        assert edited["misses"] == 1 and edited["hits"] == 0 and not any(edited["pieces"].values()), edited
        assert edited["prediction"] == cold["prediction"]
    finally:
        set_writable(site, True)
