"""``History``: the per-epoch record of training."""

from __future__ import annotations


class History:
    """Per-epoch record of one ``fit`` call (or, as ``net.history``, of every epoch a network
    has trained).

    Attributes
    ----------
    loss : list of float
        Training loss of each epoch: the weighted mean of the batch losses over the epoch (for
        ``sse``, their sum), each taken before its batch's update. For full-batch training this
        is exactly the loss at the start of the epoch.
    val_loss, val_accuracy : list of float
        With validation data: the loss on it after each epoch, and for classifiers
        (crossentropy, binary_crossentropy) the accuracy (share of rows whose argmax matches, or
        of outputs whose rounding matches for binary_crossentropy).
    val_score : list of float
        With an :class:`EarlyStopping` monitoring "val_r2" or "val_subset_accuracy": that score
        on the validation data after each epoch.
    best_epoch : int or None
        With early stopping: the 1-based epoch whose monitored loss was best.
    stopped_epoch : int or None
        The 1-based epoch after which training stopped early (early stopping, a callback, or
        divergence with ``on_divergence="warn"``).
    grad_norm, weight_norm, update_ratio, saturation : list of ndarray (n_layers,)
        With ``fit(..., track_gradients=True)``, per epoch and layer: the weight gradient's
        2-norm (mean over the epoch's steps, before clipping), the weights' 2-norm at the end of
        the epoch, the epoch's update over the weights ‖W_end − W_start‖ / ‖W_start‖, and for
        sigmoid and tanh layers the share of units (over the epoch's rows) whose derivative is
        below 1e-3 (NaN for other layers). Empty for epochs trained without tracking; not saved
        with the network.
    health_epochs : list of int
        The 1-based epochs (of this history) those entries belong to.
    """

    FIELDS = ("loss", "val_loss", "val_accuracy", "val_score")

    def __init__(self):
        self.loss: list[float] = []
        self.val_loss: list[float] = []
        self.val_accuracy: list[float] = []
        self.val_score: list[float] = []
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.grad_norm: list = []
        self.weight_norm: list = []
        self.update_ratio: list = []
        self.saturation: list = []
        self.health_epochs: list[int] = []

    @property
    def epochs(self) -> int:
        return len(self.loss)

    def extend(self, other: "History") -> None:
        """Append ``other``'s epochs to these."""
        offset = len(self.loss)
        for field in self.FIELDS:
            getattr(self, field).extend(getattr(other, field))
        for field in ("grad_norm", "weight_norm", "update_ratio", "saturation"):
            getattr(self, field).extend(getattr(other, field))
        self.health_epochs.extend(offset + epoch for epoch in other.health_epochs)

    def to_dict(self) -> dict:
        """The per-epoch fields as lists (JSON-ready)."""
        return {field: list(getattr(self, field)) for field in self.FIELDS}

    @classmethod
    def from_dict(cls, fields: dict) -> "History":
        history = cls()
        for field in cls.FIELDS:
            getattr(history, field).extend(float(v) for v in fields.get(field, []))
        return history

    def __repr__(self) -> str:
        last = f", last loss {self.loss[-1]:.6g}" if self.loss else ""
        return f"History({self.epochs} epochs{last})"
