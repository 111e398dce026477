"""fastgd: dense neural networks trained by gradient descent with JIT-compiled Numba kernels.

Quick start::

    import fastgd
    net = fastgd.Network([2, 4, 1], activation="sigmoid", loss="mse", random_state=0)
    history = net.fit(X, y, optimizer=fastgd.optimizers.Adam(lr=0.01), epochs=500)
    net.predict(X)
"""

__version__ = "0.1.0"

from . import optimizers, reference, schedules
from ._config import show_config
from .gradcheck import GradientCheck, gradient_check
from .network import DivergenceError, DivergenceWarning, Gradients, History, Network, StopTraining
from .optimizers import SGD, Adagrad, Adam, AdamW, Momentum, RMSprop
from .persistence import load
from .plotting import plot_history

__all__ = [
    "Network",
    "History",
    "StopTraining",
    "DivergenceError",
    "DivergenceWarning",
    "Gradients",
    "GradientCheck",
    "gradient_check",
    "load",
    "plot_history",
    "optimizers",
    "schedules",
    "reference",
    "show_config",
    "SGD",
    "Momentum",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "__version__",
]
