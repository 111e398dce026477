"""fastgd: dense neural networks trained by gradient descent with JIT-compiled Numba kernels.

Quick start::

    import fastgd
    net = fastgd.Network([2, 4, 1], activation="sigmoid", loss="mse", random_state=0)
    history = net.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=500)
    net.predict(X)
"""

__version__ = "0.2.0"

from . import distributed, optimizers, reference, schedules, streaming
from .convert import from_sklearn, from_torch
from .diagnostics import show_config
from .gradcheck import GradientCheck, gradient_check
from .history import History
from .network import Gradients, Network, load
from .optimizers import SGD, Adagrad, Adam, AdamW, Momentum, RMSprop
from .plotting import plot_history
from .streaming import Streaming
from .training import DivergenceError, DivergenceWarning, StopTraining
from . import callbacks
from .training.health import GradientTracking, GradientWarning

__all__ = [
    "Network",
    "History",
    "StopTraining",
    "DivergenceError",
    "DivergenceWarning",
    "GradientTracking",
    "GradientWarning",
    "Gradients",
    "GradientCheck",
    "gradient_check",
    "load",
    "plot_history",
    "optimizers",
    "schedules",
    "callbacks",
    "reference",
    "distributed",
    "streaming",
    "Streaming",
    "show_config",
    "from_sklearn",
    "from_torch",
    "SGD",
    "Momentum",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "__version__",
]
