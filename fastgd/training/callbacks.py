"""Callbacks: code that runs between epochs of ``fit``, outside the compiled loop.

The built-in ones (early stopping, checkpoints, the progress bar) are of the same kind users
write: a ``Callback`` whose ``on_epoch_end(epoch, history, network)`` returns ``False`` (or
raises :class:`StopTraining`) to stop, and whose ``every`` says how often it runs. A plain
function ``f(epoch, history, network)`` works too (``FunctionCallback``). The driver returns to
Python only as often as the callbacks ask (the greatest common divisor of their ``every``), so
with none a fit is one compiled call.

Hooks, in the order the driver calls them:

* ``on_fit_begin(fit)``: once, with a ``FitInfo`` (epochs asked for, rows, the network).
* ``on_epoch_end(epoch, history, network)``: after every ``every``-th epoch (``epoch`` counts
  from 1 within the fit; ``history`` is the fit's, validation already recorded).
* ``on_chunk_end(epochs, seconds)``: after every compiled call, with how many epochs it ran.
* ``on_fit_end(fit, outcome)``: once, however the fit ends; ``outcome`` is "finished",
  "stopped" (a callback or early stopping), "diverged" or "interrupted".
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from .. import _validation as check


class StopTraining(Exception):
    """Raise from a callback to end ``fit`` cleanly after the current epoch (like returning False)."""


@dataclass
class FitInfo:
    """What a callback may want to know about the fit it runs in."""

    network: object
    epochs: int  # asked for
    rows: int  # training rows per epoch
    history: object  # the fit's History
    ranks: int = 1  # processes of a data-parallel fit


class Callback:
    """Base class of fit's callbacks (see the module docstring for the hooks)."""

    every = 1
    # True: the callback wants to run about ten times a second rather than every ``every``
    # epochs (the progress bar); the driver then groups epochs by time.
    timed = False

    def on_fit_begin(self, fit: FitInfo) -> None:
        pass

    def on_epoch_end(self, epoch, history, network):
        return None

    def on_chunk_end(self, epochs, seconds) -> None:
        pass

    def on_fit_end(self, fit: FitInfo, outcome: str) -> None:
        pass


class FunctionCallback(Callback):
    """A plain function ``f(epoch, history, network)`` as a callback; ``f.every`` (default 1)."""

    def __init__(self, function):
        self.function = function
        self.every = check.as_int(getattr(function, "every", 1), "callback.every", 1)

    def on_epoch_end(self, epoch, history, network):
        return self.function(epoch, history, network)

    def __repr__(self):
        return f"FunctionCallback({self.function!r})"


class EarlyStopping(Callback):
    """Stop once the monitored loss has not improved by more than ``min_delta`` for ``patience``
    epochs. The monitored loss is the validation loss when there is one, else the training loss.
    ``restore_best``: at the end of the fit put back the parameters of the best epoch (the
    optimizer state stays that of the last epoch, as Keras does)."""

    def __init__(self, patience=10, min_delta=0.0, restore_best=True):
        self.patience = check.as_int(patience, "patience", 0)
        self.min_delta = check.as_real(min_delta, "min_delta", minimum=0.0)
        self.restore_best = check.as_bool(restore_best, "restore_best")

    def on_fit_begin(self, fit):
        self.best, self.best_parameters, self.waited = math.inf, None, 0

    def on_epoch_end(self, epoch, history, network):
        monitor = history.val_loss if history.val_loss else history.loss
        if monitor[-1] < self.best - self.min_delta:
            self.best, self.best_parameters, self.waited = monitor[-1], network.flat_parameters.copy(), 0
            history.best_epoch = epoch
            return None
        self.waited += 1
        return False if self.waited >= self.patience else None

    def on_fit_end(self, fit, outcome):
        if self.restore_best and self.best_parameters is not None and outcome in ("finished", "stopped", "diverged"):
            fit.network.flat_parameters[...] = self.best_parameters


class Checkpoint(Callback):
    """Save the network (``Network.save``) to ``path`` every ``every`` epochs, and when the fit
    ends, whatever ends it. Each write is atomic, so ``path`` always holds a whole checkpoint."""

    def __init__(self, path, every=1):
        self.path = check_checkpoint_path(path)
        self.every = check.as_int(every, "checkpoint_every", 1)

    def on_fit_begin(self, fit):
        self.saved_at = None
        self.network = fit.network
        self.ranks = fit.ranks

    def save(self):
        if self.saved_at != self.network.epochs_trained:
            from ..persistence import write

            # The file records how many processes trained it; it resumes on any number.
            write(self.path, self.network.get_config(), self.network.state_dict(), training={"ranks": self.ranks})
            self.saved_at = self.network.epochs_trained

    def on_epoch_end(self, epoch, history, network):
        self.save()

    def on_fit_end(self, fit, outcome):
        self.save()


def check_checkpoint_path(checkpoint):
    """A checkpoint path, checked before any training: a file path in an existing folder this
    process can write to."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path (str or os.PathLike), got {type(checkpoint).__name__}")
    path = os.fspath(checkpoint)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path or path.endswith(os.sep):
        raise ValueError(f"checkpoint must be a file path, got {path!r}")
    if "\x00" in path:
        raise ValueError(f"checkpoint {path!r} is not a usable path: it holds a NUL character")
    try:
        folder = os.path.dirname(os.path.abspath(path))
        folder_exists, is_folder = os.path.isdir(folder), os.path.isdir(path)
    except (ValueError, OSError) as error:  # a NUL byte, a name too long...
        raise ValueError(f"checkpoint {path!r} is not a usable path: {error}") from None
    if not folder_exists:
        raise ValueError(f"checkpoint: folder {folder!r} does not exist")
    if is_folder:
        raise ValueError(f"checkpoint must be a file path, got the folder {path!r}")
    import tempfile

    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise ValueError(f"checkpoint: cannot write to folder {folder!r} ({error.strerror or error})") from None
    return path


class ProgressBar(Callback):
    """A tqdm progress bar: epochs, loss, val_loss, val_acc and samples/s. Without other
    per-epoch work the driver groups epochs so that it updates about ten times a second, so it
    costs nothing measurable."""

    timed = True

    def __init__(self):
        self.bar = None

    def on_fit_begin(self, fit):
        from tqdm.auto import tqdm

        self.fit, self.samples_per_second = fit, 0.0
        self.bar = tqdm(total=fit.epochs, unit="epoch", desc="fit", leave=True)

    def on_chunk_end(self, epochs, seconds):
        self.samples_per_second = epochs * self.fit.rows / max(seconds, 1e-9)
        history = self.fit.history
        if history.loss:
            postfix = {"loss": f"{history.loss[-1]:.4g}"}
            if history.val_loss:
                postfix["val_loss"] = f"{history.val_loss[-1]:.4g}"
            if history.val_accuracy:
                postfix["val_acc"] = f"{history.val_accuracy[-1]:.3f}"
            postfix["samples/s"] = f"{self.samples_per_second:.3g}"
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(epochs)

    def on_fit_end(self, fit, outcome):
        if self.bar is not None:
            self.bar.close()


def check_callbacks(callbacks):
    """User callbacks as a list of ``Callback`` objects (plain functions wrapped)."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or (callable(callbacks) and not isinstance(callbacks, (list, tuple))):
        callbacks = [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError("callbacks must be a callable, a Callback, or a list of them")
    checked = []
    for callback in callbacks:
        if isinstance(callback, Callback):
            check.as_int(callback.every, "callback.every", 1)
            checked.append(callback)
        elif callable(callback):
            checked.append(FunctionCallback(callback))
        else:
            raise TypeError(f"callbacks must be callables or Callback objects, got {type(callback).__name__}")
    return checked


def chunk_epochs(callbacks, validation, epochs, limit):
    """Epochs per compiled call: 1 with validation; else the greatest common divisor of the
    callbacks' ``every`` (all of ``epochs`` when there are none), at most ``limit``. ``None``
    when only timed callbacks (the progress bar) are there: the driver then groups by time."""
    if validation:
        return 1
    periodic = [c.every for c in callbacks if not c.timed]
    if not periodic:
        return None if callbacks else min(epochs, limit)
    return min(math.gcd(*periodic), limit, epochs)


class Clock:
    """Time of the last chunk, for grouping epochs by time."""

    def __init__(self):
        self.started = time.perf_counter()

    def restart(self):
        now = time.perf_counter()
        elapsed, self.started = now - self.started, now
        return max(elapsed, 1e-9)
