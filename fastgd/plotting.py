"""Loss curves with matplotlib (an optional extra: ``pip install fastgd[plot]``)."""

from __future__ import annotations

import os

from .history import History


def plot_history(history: History, path=None, title=None):
    """Draw training and validation loss (and validation accuracy, if any) per epoch, and with
    ``track_gradients`` each layer's gradient norm per epoch on a log scale.

    Parameters
    ----------
    history : fastgd.History
        From ``fit`` or ``net.history``.
    path : str or path-like, optional
        Write the figure there as a PNG.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(history, History):
        raise TypeError(f"history must be a fastgd.History, got {type(history).__name__}")
    if not history.loss:
        raise ValueError("history holds no epochs to plot")
    try:
        import matplotlib

        if path is not None and os.environ.get("MPLBACKEND") is None:
            matplotlib.use("Agg")  # writing a file needs no screen
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plot_history needs matplotlib: pip install 'fastgd[plot]'") from exc

    has_accuracy = bool(history.val_accuracy)
    has_health = bool(history.grad_norm)
    panels = 1 + has_accuracy + has_health
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels if panels > 1 else 6, 4), squeeze=False)
    epochs = range(1, len(history.loss) + 1)
    loss_axes = axes[0, 0]
    loss_axes.plot(epochs, history.loss, label="training loss")
    if history.val_loss:
        loss_axes.plot(range(1, len(history.val_loss) + 1), history.val_loss, label="validation loss")
    if history.best_epoch:
        loss_axes.axvline(history.best_epoch, color="grey", linestyle=":", label=f"best epoch {history.best_epoch}")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("loss")
    loss_axes.set_yscale("log" if min(history.loss) > 0 else "linear")
    loss_axes.legend()
    if has_accuracy:
        accuracy_axes = axes[0, 1]
        accuracy_axes.plot(range(1, len(history.val_accuracy) + 1), history.val_accuracy, color="C1")
        accuracy_axes.set_xlabel("epoch")
        accuracy_axes.set_ylabel("validation accuracy")
    if has_health:
        import numpy as np

        health_axes = axes[0, panels - 1]
        norms = np.array(history.grad_norm)  # (epochs, layers)
        for layer in range(norms.shape[1]):
            health_axes.plot(
                history.health_epochs,
                norms[:, layer],
                label=f"layer {layer}",
                color=plt.cm.viridis(layer / max(norms.shape[1] - 1, 1)),
            )
        health_axes.set_xlabel("epoch")
        health_axes.set_ylabel("gradient norm (mean over steps)")
        if np.all(norms[np.isfinite(norms)] > 0):
            health_axes.set_yscale("log")
        health_axes.legend(fontsize="small", ncol=2 if norms.shape[1] > 6 else 1)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    if path is not None:
        figure.savefig(os.fspath(path), format="png", dpi=100)
    return figure
