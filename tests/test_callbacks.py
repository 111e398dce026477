"""Callbacks: the built-in ones are ordinary Callback objects, usable as such, and a user's
Callback gets every hook in order."""

import numpy as np
import pytest
from _helpers import regression_data

import fastgd
from fastgd.training.callbacks import Callback, Checkpoint, EarlyStopping


class Recorder(Callback):
    every = 2

    def __init__(self):
        self.events = []

    def on_fit_begin(self, fit):
        self.events.append(("begin", fit.epochs, fit.rows))

    def on_epoch_end(self, epoch, history, network):
        self.events.append(("epoch", epoch, len(history.loss), network.epochs_trained))

    def on_chunk_end(self, epochs, seconds):
        assert seconds > 0
        self.events.append(("chunk", epochs))

    def on_fit_end(self, fit, outcome):
        self.events.append(("end", outcome))


def test_a_callback_object_gets_every_hook_in_order():
    X, y = regression_data(n=30)
    net = fastgd.Network([3, 4, 2], random_state=0)
    recorder = Recorder()
    net.fit(X, y, optimizer=fastgd.SGD(lr=0.1), epochs=6, callbacks=recorder)
    assert recorder.events == [
        ("begin", 6, 30),
        ("epoch", 2, 2, 2),
        ("chunk", 2),
        ("epoch", 4, 4, 4),
        ("chunk", 2),
        ("epoch", 6, 6, 6),
        ("chunk", 2),
        ("end", "finished"),
    ]


def test_built_in_callbacks_passed_as_objects_behave_like_the_keywords(tmp_path):
    X, y = regression_data(n=40)
    X_val, y_val = X.copy(), 1 - y
    by_keyword = fastgd.Network([3, 8, 2], random_state=0)
    by_object = by_keyword.copy()
    h1 = by_keyword.fit(
        X,
        y,
        optimizer=fastgd.Adam(0.05),
        epochs=100,
        validation_data=(X_val, y_val),
        early_stopping=True,
        patience=3,
        shuffle=False,
        checkpoint=tmp_path / "a.npz",
    )
    h2 = by_object.fit(
        X,
        y,
        optimizer=fastgd.Adam(0.05),
        epochs=100,
        validation_data=(X_val, y_val),
        shuffle=False,
        callbacks=[EarlyStopping(patience=3), Checkpoint(tmp_path / "b.npz")],
    )
    assert h1.stopped_epoch == h2.stopped_epoch < 100 and h1.best_epoch == h2.best_epoch
    np.testing.assert_array_equal(by_keyword.flat_parameters, by_object.flat_parameters)
    np.testing.assert_array_equal(
        fastgd.load(tmp_path / "a.npz").flat_parameters, fastgd.load(tmp_path / "b.npz").flat_parameters
    )


def test_callback_arguments_are_checked_before_training():
    X, y = regression_data(n=10)
    net = fastgd.Network([3, 4, 2], random_state=0)
    before = net.flat_parameters.copy()
    with pytest.raises(ValueError, match="patience must be >= 0"):
        EarlyStopping(patience=-1)
    with pytest.raises(TypeError, match="callbacks must be callables or Callback objects"):
        net.fit(X, y, callbacks=[3])
    with pytest.raises(ValueError, match="callback.every must be >= 1"):
        bad = Recorder()
        bad.every = 0
        net.fit(X, y, callbacks=bad)
    np.testing.assert_array_equal(net.flat_parameters, before)
