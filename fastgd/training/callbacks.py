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
    # () -> float: the learning rate of the last optimizer step taken (the optimizer's rate
    # after the schedule and any adaptive division), or the first step's before training.
    learning_rate: object = None


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


MONITORS = ("auto", "loss", "val_loss", "val_accuracy", "val_subset_accuracy", "val_r2")
# The monitors that are scores (higher is better), recorded in history.val_score unless noted.
SCORES = ("val_accuracy", "val_subset_accuracy", "val_r2")
RULES = ("patience", "no_improvement")


class EarlyStopping(Callback):
    """Stop training once the monitored value has stopped improving.

    Given as ``fit(..., early_stopping=EarlyStopping(...))`` (or ``early_stopping=True`` with
    the ``patience``, ``min_delta`` and ``restore_best`` keywords), the rule runs inside the
    compiled loop after every epoch (``fastgd.kernels.epoch_end``), with the validation pass,
    and the fit runs all its epochs in one call; given in ``callbacks`` it runs in Python between
    epochs. Both stop at the same epoch and restore the same parameters.

    Parameters
    ----------
    patience : int, default 10
    min_delta : float, default 0
        The improvement that counts.
    restore_best : bool, default True
        At the end of the fit put back the parameters of the best epoch (the optimizer state
        stays that of the last epoch, as Keras does).
    monitor : {"auto", "loss", "val_loss", "val_accuracy", "val_subset_accuracy", "val_r2"}, default "auto"
        What is watched: the validation loss when there is validation data, else the training
        loss ("auto"). The validation scores are higher-is-better: "val_accuracy" (as
        ``history.val_accuracy``), "val_subset_accuracy" (rows with every output on its
        target's side of 0.5: scikit-learn's multilabel accuracy) and "val_r2" (R² averaged
        over the outputs: scikit-learn's regressor score); those two are recorded in
        ``history.val_score``.
    rule : {"patience", "no_improvement"}, default "patience"
        "patience" (Keras's): an epoch that beats the best by more than ``min_delta`` is the new
        best, any other a wait; ``patience`` waits in a row stop. "no_improvement" (scikit-learn's
        ``tol``/``n_iter_no_change``): an epoch that does not beat the best by ``min_delta``
        counts, one that does restarts the count, one that beats it at all is the new best;
        more than ``patience`` counts in a row stop (``patience`` may be ``math.inf``: never).
    lr_factor : float > 1, optional
        Instead of stopping, divide the learning rate by this and restart the count, as long as
        the rate is above ``min_lr`` (scikit-learn's ``learning_rate="adaptive"``: 5 and 1e-6).
    min_lr : float, default 1e-6
    resume : bool, default False
        Start each fit from the state the last one left (the best value, the count, the rate's
        factor and the best parameters) rather than afresh: scikit-learn's warm starts and
        ``partial_fit``.

    Attributes
    ----------
    best, waited, lr_scale, best_parameters
        The state at the end of the last fit: the best monitored value, the count, the factor
        on the optimizer's rate, the best epoch's parameters (with ``restore_best``, else None).
    """

    def __init__(
        self,
        patience=10,
        min_delta=0.0,
        restore_best=True,
        monitor="auto",
        rule="patience",
        lr_factor=None,
        min_lr=1e-6,
        resume=False,
    ):
        if isinstance(patience, float) and patience == math.inf:
            self.patience = math.inf
        else:
            self.patience = check.as_int(patience, "patience", 0)
        self.min_delta = check.as_real(min_delta, "min_delta", minimum=0.0)
        self.restore_best = check.as_bool(restore_best, "restore_best")
        if not isinstance(monitor, str) or monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {list(MONITORS)}, got {monitor!r}")
        if not isinstance(rule, str) or rule not in RULES:
            raise ValueError(f"rule must be one of {list(RULES)}, got {rule!r}")
        self.monitor, self.rule = monitor, rule
        self.lr_factor = None if lr_factor is None else check.as_real(lr_factor, "lr_factor", minimum=1.0)
        self.min_lr = check.as_real(min_lr, "min_lr", minimum=0.0)
        self.resume = check.as_bool(resume, "resume")
        self.reset()

    def reset(self):
        """Forget the state (the next fit starts afresh even with ``resume``)."""
        self.best = -math.inf if self.monitor in SCORES else math.inf
        self.waited, self.lr_scale, self.best_parameters = 0, 1.0, None

    @property
    def higher(self) -> bool:
        return self.monitor in SCORES

    def watches(self, validation: bool) -> str:
        """The history field this rule monitors in a fit with (or without) validation data."""
        if self.monitor == "auto":
            return "val_loss" if validation else "loss"
        if self.monitor != "loss" and not validation:
            raise ValueError(
                f"early stopping on {self.monitor!r} needs validation data (validation_data or validation_split)"
            )
        return self.monitor

    def on_fit_begin(self, fit):
        if not self.resume:
            self.reset()
        self.base_lr = float(fit.network.optimizer.lr)

    def on_epoch_end(self, epoch, history, network):
        # The rule itself is the compiled loop's (``stopping_rule`` of the network's engine: the
        # kernel, or its NumPy twin), so both ways of running it decide alike.
        from .plan import stopping_rule

        validation = bool(history.val_loss)
        field = self.watches(validation)
        value = getattr(history, "val_score" if field in ("val_subset_accuracy", "val_r2") else field)[-1]
        rule = stopping_rule(self, validation, network.loss_spec, self.base_lr)
        stop, better, waited, lr_scale = network.engine.stopping_rule(
            rule, float(self.best), float(self.waited), float(self.lr_scale), float(value)
        )
        self.waited, self.lr_scale = waited, lr_scale
        if better:
            self.best, self.best_parameters = value, network.flat_parameters.copy()
            history.best_epoch = epoch
        return False if stop else None

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
