"""Training: the ``fit`` driver and its callbacks.

``fit(net, X, y, ...)`` (what ``Network.fit`` calls) checks every argument, then runs the
compiled training loop (``fastgd.kernels.train_epochs``) a chunk of epochs at a time, returning
to Python between chunks only for what asks for it: validation, and the callbacks
(``callbacks``), of which early stopping, checkpoints and the progress bar are built-in ones.
Ctrl-C during a fit is handled by ``interrupt``.
"""

from .callbacks import Callback, Checkpoint, EarlyStopping, FitInfo, FunctionCallback, ProgressBar, StopTraining
from .driver import DivergenceError, DivergenceWarning, Trainer, fit

__all__ = [
    "fit",
    "Trainer",
    "Callback",
    "FunctionCallback",
    "EarlyStopping",
    "Checkpoint",
    "ProgressBar",
    "FitInfo",
    "StopTraining",
    "DivergenceError",
    "DivergenceWarning",
]
