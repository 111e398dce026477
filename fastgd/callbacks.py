"""Callbacks: code that runs between epochs of ``fit`` (``fit(..., callbacks=[...])``).

``from fastgd.callbacks import EarlyStopping`` works as written. The built-in callbacks
(:class:`EarlyStopping`, :class:`Checkpoint`, :class:`ProgressBar`), the base class
:class:`Callback` users derive from, :class:`FunctionCallback` (a plain function
``f(epoch, history, network)``), :class:`StopTraining` and :class:`FitInfo` (what ``on_fit_begin``
receives) live in :mod:`fastgd.training.callbacks`, whose docstring describes the hooks; this
module re-exports them and adds :class:`TensorBoard`.
"""

from __future__ import annotations

import itertools
import numbers
import os
import tempfile

from . import _validation as check
from .training.callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    FitInfo,
    FunctionCallback,
    ProgressBar,
    StopTraining,
)

__all__ = [
    "Callback",
    "EarlyStopping",
    "Checkpoint",
    "ProgressBar",
    "FunctionCallback",
    "StopTraining",
    "FitInfo",
    "TensorBoard",
]

INSTALL_TENSORBOARD = 'pip install "fastgd[tensorboard]"'
_EVENT_FILES = itertools.count()


def _tensorboardX():
    """tensorboardX, or an ImportError that names the extra installing it."""
    try:
        import tensorboardX
    except ImportError as error:
        raise ImportError(
            f"fastgd.callbacks.TensorBoard writes with tensorboardX, which is not installed: "
            f"{INSTALL_TENSORBOARD} ({error})"
        ) from None
    return tensorboardX


def default_log_dir() -> str:
    """``runs/<date>_<time>_<host>``, as PyTorch's ``SummaryWriter`` names a run (``runs/Dec03_14-05-09_host``)."""
    import socket
    from datetime import datetime

    return os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname())


def check_log_dir(log_dir) -> str:
    """``log_dir`` as a path this process can write a run into: an existing folder it can write
    to, or a path whose closest existing ancestor is such a folder (the rest is made when the
    fit begins). ValueError/TypeError naming ``log_dir`` otherwise; nothing is created."""
    if log_dir is None:
        log_dir = default_log_dir()
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(f"log_dir must be None or a folder path (str or os.PathLike), got {type(log_dir).__name__}")
    path = os.fspath(log_dir)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise ValueError("log_dir must be a folder path, got ''")
    if "\x00" in path:
        raise ValueError(f"log_dir {path!r} is not a usable path: it holds a NUL character")
    try:
        existing = os.path.abspath(path)
        while not os.path.lexists(existing):
            existing = os.path.dirname(existing)
        is_folder = os.path.isdir(existing)
    except (ValueError, OSError) as error:  # a name too long...
        raise ValueError(f"log_dir {path!r} is not a usable path: {error}") from None
    if not is_folder:
        which = "is a file" if os.path.abspath(path) == existing else f"lies under {existing!r}, which is not a folder"
        raise ValueError(f"log_dir {path!r} {which}: it must be a folder")
    _check_writable(existing, path)
    return path


def _check_writable(folder, log_dir):
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise ValueError(
            f"log_dir {log_dir!r}: cannot write to folder {folder!r} ({error.strerror or error})"
        ) from None


def _hparam(value):
    # What TensorBoard's hparams take: bool, str or a number; anything else (None, the layer
    # sizes, Adam's betas) as its text.
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return str(list(value))
    return str(value)


class TensorBoard(Callback):
    """Log training to TensorBoard: ``fit(..., callbacks=[TensorBoard()])``, then
    ``tensorboard --logdir runs``.

    Needs the ``tensorboard`` extra (``pip install "fastgd[tensorboard]"``: tensorboardX writes
    the event files, TensorBoard reads them). Per epoch, with the network's epoch number
    (``net.epochs_trained``) as the step, so that a second fit continues the curves, it logs the
    scalars

    * ``loss/train``: ``history.loss``;
    * ``loss/validation`` and ``accuracy/validation``: ``history.val_loss`` and
      ``history.val_accuracy``, when the fit has validation data (the accuracy for classifiers);
    * ``learning_rate``: the rate of the epoch's last optimizer step (the schedule and
      early stopping's ``lr_factor`` division included: ``FitInfo.learning_rate``);
    * ``gradient_norm/layer_<i>`` and ``update_ratio/layer_<i>``: with
      ``fit(..., track_gradients=True)``, ``history.grad_norm`` and ``history.update_ratio`` of
      layer i (0 is the layer after the inputs, as ``net.weights[i]``);

    the histograms ``weights/layer_<i>`` and ``biases/layer_<i>`` (``net.weights[i]``,
    ``net.biases[i]``) after every epoch whose number is a multiple of ``histogram_every``; and
    once, with the first epoch it logs, the network's configuration (``net.get_config()``) and
    its optimizer (its class, and each of ``get_config()`` as ``optimizer/<name>``) as hparams
    whose metrics are the loss and validation scalars above. The writer is flushed and closed
    when the fit ends, however it ends.

    Scalars are stored as float32 (TensorBoard's scalar summaries, as PyTorch's
    ``SummaryWriter`` writes them). Logging each epoch makes the compiled loop return to Python
    after every epoch to write it.

    Parameters
    ----------
    log_dir : str or os.PathLike, optional
        The run's folder (made when the fit begins if missing). None:
        ``runs/<date>_<time>_<host>`` under the working directory, named when the callback is
        created, as PyTorch's ``SummaryWriter`` names it. It must be writable: checked here and
        again when the fit begins, before any training.
    histogram_every : int >= 0, default 0
        Log the weight and bias histograms after every network epoch that is a multiple of
        this; 0: never.

    Attributes
    ----------
    log_dir : str
        The run's folder.

    Notes
    -----
    One callback may serve several fits: each writes a new event file in ``log_dir``, the
    steps going on from the network's epochs (hparams are written by its first fit only; a fit
    with ``warm_start=False`` counts the network's epochs from 1 again, so give it a new
    ``log_dir``). In a data-parallel fit give it on one rank only (say ``comm.rank == 0``):
    every rank holds the same network and history.
    """

    every = 1

    def __init__(self, log_dir=None, histogram_every=0):
        self.histogram_every = check.as_int(histogram_every, "histogram_every", 0)
        self.log_dir = check_log_dir(log_dir)
        _tensorboardX()  # missing: the ImportError now, not when the fit begins
        self.writer = None
        self.hparams_written = False

    def __repr__(self):
        return f"TensorBoard(log_dir={self.log_dir!r}, histogram_every={self.histogram_every})"

    # ---------------------------------------------------------------------------------- hooks

    def on_fit_begin(self, fit):
        _tensorboardX()
        # Still writable (it may have gone since the callback was made): checked before any
        # training, and the folder made now.
        check_log_dir(self.log_dir)
        try:
            os.makedirs(self.log_dir, exist_ok=True)
        except OSError as error:
            raise ValueError(f"log_dir {self.log_dir!r}: cannot make the folder ({error.strerror or error})") from None
        _check_writable(self.log_dir, self.log_dir)
        self.fit = fit
        # The network's epoch number before this fit's first epoch: step = first_step + epoch.
        self.first_step = int(fit.network.epochs_trained)
        self.logged = 0  # epochs of this fit written

    def on_epoch_end(self, epoch, history, network):
        self._write_epochs(history, network)
        every = self.histogram_every
        if every and network.epochs_trained % every == 0:
            writer = self._writer(history)
            for layer, (weights, biases) in enumerate(zip(network.weights, network.biases)):
                writer.add_histogram(f"weights/layer_{layer}", weights, network.epochs_trained)
                writer.add_histogram(f"biases/layer_{layer}", biases, network.epochs_trained)

    def on_fit_end(self, fit, outcome):
        try:
            # Epochs recorded after the last visit (a fit that stopped or diverged mid-call).
            self._write_epochs(fit.history, fit.network)
            self._writer(fit.history)  # a fit that ended before an epoch still records its hparams
        finally:
            if self.writer is not None:
                writer, self.writer = self.writer, None
                writer.flush()
                writer.close()

    # -------------------------------------------------------------------------------- writing

    def _writer(self, history):
        if self.writer is None:
            # Event files are named by the second they were opened in and the host: the process
            # and a count keep two fits of one second apart (and in order, for readers that sort).
            suffix = f".{os.getpid()}.{next(_EVENT_FILES):06d}"
            self.writer = _tensorboardX().SummaryWriter(logdir=self.log_dir, filename_suffix=suffix)
            if not self.hparams_written:
                self._write_hparams(history)
                self.hparams_written = True
        return self.writer

    def _write_hparams(self, history):
        from tensorboardX.summary import hparams

        network = self.fit.network
        values = {name: _hparam(value) for name, value in network.get_config().items()}
        optimizer = network.optimizer
        if optimizer is not None:
            values["optimizer"] = type(optimizer).__name__
            values.update({f"optimizer/{name}": _hparam(value) for name, value in optimizer.get_config().items()})
        metrics = (
            ["loss/train"]
            + ["loss/validation"] * bool(history.val_loss)
            + ["accuracy/validation"] * bool(history.val_accuracy)
        )
        # The experiment (which hparams and metrics) and this run's values; the metrics' values
        # are the scalars of the same tags in this run, which TensorBoard's HParams tab reads.
        experiment, session_start, _ = hparams(values, {tag: 0.0 for tag in metrics})
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)

    def _write_epochs(self, history, network):
        """Write the scalars of the fit's epochs recorded since the last call."""
        recorded = len(history.loss)
        if recorded <= self.logged:
            return
        writer = self._writer(history)
        health = {epoch: index for index, epoch in enumerate(history.health_epochs) if epoch > self.logged}
        for epoch in range(self.logged + 1, recorded + 1):
            step, row = self.first_step + epoch, epoch - 1
            writer.add_scalar("loss/train", float(history.loss[row]), step)
            if row < len(history.val_loss):
                writer.add_scalar("loss/validation", float(history.val_loss[row]), step)
            if row < len(history.val_accuracy):
                writer.add_scalar("accuracy/validation", float(history.val_accuracy[row]), step)
            if epoch in health:
                index = health[epoch]
                for layer, (norm, ratio) in enumerate(zip(history.grad_norm[index], history.update_ratio[index])):
                    writer.add_scalar(f"gradient_norm/layer_{layer}", float(norm), step)
                    writer.add_scalar(f"update_ratio/layer_{layer}", float(ratio), step)
        # The rate is that of the last step taken, so it belongs to the last epoch recorded (the
        # driver visits after every epoch, so no epoch goes without its rate in practice).
        learning_rate = getattr(self.fit, "learning_rate", None)
        if callable(learning_rate):
            writer.add_scalar("learning_rate", float(learning_rate()), self.first_step + recorded)
        self.logged = recorded
