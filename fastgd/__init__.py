"""fastgd: dense neural networks trained by gradient descent with JIT-compiled Numba kernels.

Quick start::

    import fastgd
    net = fastgd.Network([2, 4, 1], activation="sigmoid", loss="mse", random_state=0)
    history = net.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=500)
    net.predict(X)

``import fastgd`` imports no more than this module: each public name is imported from its
module the first time it is used (PEP 562), so a script that only predicts never imports SciPy,
threadpoolctl or the scikit-learn estimators.
"""

from __future__ import annotations

import importlib

__version__ = "0.3.0.dev0"

# Public name -> the module that defines it (a name equal to its module's last part is the
# module itself).
_EXPORTS = {
    "Network": "fastgd.network",
    "Gradients": "fastgd.network",
    "load": "fastgd.network",
    "History": "fastgd.history",
    "StopTraining": "fastgd.training.callbacks",
    "DivergenceError": "fastgd.training.driver",
    "DivergenceWarning": "fastgd.training.driver",
    "GradientTracking": "fastgd.training.health",
    "GradientWarning": "fastgd.training.health",
    "GradientCheck": "fastgd.gradcheck",
    "gradient_check": "fastgd.gradcheck",
    "plot_history": "fastgd.plotting",
    "show_config": "fastgd.diagnostics",
    "from_sklearn": "fastgd.convert",
    "from_torch": "fastgd.convert",
    "compile": "fastgd.compilation",
    "fit_many": "fastgd.many",
    "Streaming": "fastgd.streaming",
    "SGD": "fastgd.optimizers",
    "Momentum": "fastgd.optimizers",
    "Adagrad": "fastgd.optimizers",
    "RMSprop": "fastgd.optimizers",
    "Adam": "fastgd.optimizers",
    "AdamW": "fastgd.optimizers",
    "NAdam": "fastgd.optimizers",
    "RAdam": "fastgd.optimizers",
    "Adamax": "fastgd.optimizers",
    "optimizers": "fastgd.optimizers",
    "schedules": "fastgd.schedules",
    "callbacks": "fastgd.callbacks",
    "reference": "fastgd.reference",
    "distributed": "fastgd.distributed",
    "streaming": "fastgd.streaming",
    "training": "fastgd.training",
    "datasets": "fastgd.datasets",
    "sklearn": "fastgd.sklearn",
    "kernels": "fastgd.kernels",
}

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
    "compile",
    "fit_many",
    "SGD",
    "Momentum",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "NAdam",
    "RAdam",
    "Adamax",
    "__version__",
]


_LOADED = {}  # name -> what it names, once imported


def __getattr__(name):
    value = _LOADED.get(name)
    if value is None:
        module_name = _EXPORTS.get(name)
        if module_name is None:
            raise AttributeError(f"module 'fastgd' has no attribute {name!r}")
        module = importlib.import_module(module_name)
        value = module if module_name.rsplit(".", 1)[-1] == name else getattr(module, name)
        _LOADED[name] = value
    return value


def __dir__():
    return sorted({*_EXPORTS, "__version__"})
