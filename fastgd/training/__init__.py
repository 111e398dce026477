"""Training: the ``fit`` driver and its callbacks.

``fit(net, X, y, ...)`` (what ``Network.fit`` calls) checks every argument (``plan``), then runs
the compiled training loop (``fastgd.kernels.train_epochs``, through a ``trainer.Trainer``): in
memory in one process every epoch in one call, validation and early stopping inside it, Python
visited only for Python callbacks (``callbacks``: a user's, checkpoints, the progress bar);
data-parallel or streamed, a chunk of epochs per call (``driver``). Ctrl-C during a fit is
handled by ``interrupt``.
"""

from .callbacks import Callback, Checkpoint, EarlyStopping, FitInfo, FunctionCallback, ProgressBar, StopTraining
from .driver import DivergenceError, DivergenceWarning, fit
from .trainer import Trainer

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
