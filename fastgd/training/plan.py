"""Every argument of ``fit``, checked and converted before anything changes: the ``Plan``.

``fit`` takes its data and batching positionally and everything else as keywords, each declared
once in ``FIT_OPTIONS`` with its default (an unknown keyword is a TypeError naming it). The
related keywords are grouped where a user would look for them: early stopping's ``patience``,
``min_delta`` and ``restore_best`` are an :class:`EarlyStopping` (``early_stopping=True`` makes
one from the keywords, ``early_stopping=EarlyStopping(...)`` is the same thing as an object),
the checkpoint's path and period a :class:`Checkpoint`, gradient tracking's thresholds a
``GradientTracking``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _validation as check
from .._threads import check_threads
from ..kernels import epoch_end
from ..optimizers import SGD, make_optimizer
from ..schedules import make_schedule
from ..streaming import Streaming, check_streamed, is_streamed
from .callbacks import Checkpoint, EarlyStopping, ProgressBar, check_callbacks
from .health import check_tracking

ON_DIVERGENCE = ("raise", "warn")

# Every keyword of fit besides (optimizer, epochs, batch_size, shuffle, sample_weight), with its
# default; Network.fit's and fastgd.training.fit's docstrings describe them.
FIT_OPTIONS = {
    "validation_data": None,
    "validation_split": None,
    "early_stopping": False,
    "patience": 10,
    "min_delta": 0.0,
    "restore_best": True,
    "callbacks": None,
    "verbose": 0,
    "warm_start": True,
    "lr_schedule": None,
    "checkpoint": None,
    "checkpoint_every": 1,
    "on_divergence": "raise",
    "grad_shards": None,
    "comm": None,
    "partitioned": False,
    "streaming": None,
    "clip_grad_norm": None,
    "clip_grad_value": None,
    "track_gradients": False,
}


class Plan:
    """Every argument of ``fit``, checked and converted; raises before anything changes.

    Attributes the driver reads: ``X``, ``Y``, ``weight`` (the training data, checked), ``batch``
    (rows per step on this rank), ``epochs``, ``shuffle``, ``optimizer``, ``schedule``, ``clip``,
    ``tracking``, ``grad_shards``, ``partitioned``, ``warm_start``, ``on_divergence``,
    ``validation`` ((X_val, Y_val, row_scale) or None), ``stopping`` (an EarlyStopping or None),
    ``callbacks`` (the Python callbacks, the progress bar last), ``stream`` (None, or the
    streaming options and converters), ``session`` (MPI, or None).
    """

    def __init__(self, net, X, y, optimizer, epochs, batch_size, shuffle, sample_weight, options, session=None):
        unknown = sorted(set(options) - set(FIT_OPTIONS))
        if unknown:
            raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}")
        options = {**FIT_OPTIONS, **options}
        self.session = session
        self._scalars(epochs, batch_size, shuffle, options)
        self._data(net, X, y, sample_weight, options)
        if optimizer is None:
            self.optimizer = net.optimizer if net.optimizer is not None else SGD(lr=0.01)
        else:
            self.optimizer = make_optimizer(optimizer)
        self._batches(net, sample_weight)
        self.stopping = _stopping(options, self.validation is not None)
        self._callbacks(options)

    def _scalars(self, epochs, batch_size, shuffle, options):
        self.tracking = check_tracking(options["track_gradients"])
        self.clip = [_positive_or_none(options[name], name) for name in ("clip_grad_norm", "clip_grad_value")]
        self.partitioned = check.as_bool(options["partitioned"], "partitioned")
        self.epochs = check.as_int(epochs, "epochs", 0)
        self.batch_size = check.as_int(batch_size, "batch_size", 1, allow_none=True)
        if isinstance(shuffle, str):
            if shuffle != "blocks":
                raise ValueError(f"shuffle must be True, False or 'blocks', got {shuffle!r}")
            self.shuffle = "blocks"
        else:
            self.shuffle = check.as_bool(shuffle, "shuffle")
        streaming = options["streaming"]
        if streaming is not None and not isinstance(streaming, Streaming):
            raise TypeError(f"streaming must be a fastgd.streaming.Streaming, got {type(streaming).__name__}")
        self.warm_start = check.as_bool(options["warm_start"], "warm_start")
        self.schedule = make_schedule(options["lr_schedule"])
        verbose = options["verbose"]
        if isinstance(verbose, (bool, np.bool_)) or not isinstance(verbose, numbers.Integral) or verbose not in (0, 1):
            raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
        self.verbose = int(verbose)
        on_divergence = options["on_divergence"]
        if not isinstance(on_divergence, str) or on_divergence not in ON_DIVERGENCE:
            raise ValueError(f"on_divergence must be one of {list(ON_DIVERGENCE)}, got {on_divergence!r}")
        self.on_divergence = on_divergence
        self.grad_shards = check_threads(options["grad_shards"], "grad_shards")
        if options["partitioned"] and self.session is None:
            raise ValueError("partitioned applies to data-parallel training: give comm too")

    def _data(self, net, X, y, sample_weight, options):
        validation_data, validation_split, streaming = (
            options["validation_data"],
            options["validation_split"],
            options["streaming"],
        )
        self.stream = None
        if streaming is not None or self.shuffle == "blocks" or any(is_streamed(v) for v in (X, y, sample_weight)):
            # Out-of-core: checked a block at a time, streamed in chunks (fastgd.streaming).
            if validation_split is not None:
                raise ValueError("validation_split needs in-memory data; give validation_data with streamed data")
            if self.tracking is not None:
                # An epoch of streamed data is a compiled call per chunk; the per-epoch sums
                # would have to be carried across them.
                raise ValueError("track_gradients is not available with streamed data")
            self.X, self.Y, self.weight, convert_x, convert_y = check_streamed(net, X, y, sample_weight)
            self.validation = _validation_inputs(net, self.X, self.Y, self.weight, validation_data, None)[3]
            self.stream = (streaming or Streaming(), convert_x, convert_y)
        else:
            X, Y, weight = net.check_inputs(X, y, sample_weight)
            self.X, self.Y, self.weight, self.validation = _validation_inputs(
                net, X, Y, weight, validation_data, validation_split
            )

    def _batches(self, net, sample_weight):
        n, session = self.X.shape[0], self.session
        self.batch = n if self.batch_size is None else min(self.batch_size, n)
        if session is not None:
            ranks = session.size
            if self.grad_shards not in (None, ranks):
                raise ValueError(
                    f"grad_shards must be None or the number of ranks ({ranks}) with comm, got {self.grad_shards}"
                )
            self.grad_shards = None
            if self.partitioned:
                if self.batch_size is not None and self.batch_size % ranks:
                    raise ValueError(
                        f"batch_size ({self.batch_size}) must be a multiple of the ranks ({ranks}) with partitioned "
                        "data"
                    )
                self.batch = n if self.batch_size is None else min(self.batch_size // ranks, n)
            elif self.batch < ranks:
                raise ValueError(f"a batch ({self.batch} rows) must have at least a row for each of the {ranks} ranks")
        if self.grad_shards is not None and self.grad_shards > self.batch:
            raise ValueError(f"grad_shards ({self.grad_shards}) must be at most the rows of a batch ({self.batch})")
        # With partitioned data each rank's weights are rescaled by the largest over all ranks
        # (``agreed``): a mean loss's weights were divided by this rank's largest.
        self.weighted = sample_weight is not None
        rescale = self.weighted and net.loss_spec.mean and self.partitioned
        self.raw_weight_max = float(np.max(np.asarray(sample_weight, dtype=np.float64))) if rescale else None
        # With penalty_per_sample the loop divides the penalties by each batch's total weight,
        # of weights a mean loss had divided by their largest (Network.check_inputs): the
        # penalties are divided by it too, so that they are per unit of the weights given.
        self.penalty_scale = 1.0
        self.scaled_penalty = self.weighted and net.loss_spec.mean and net.penalty_per_sample
        if self.scaled_penalty:
            self.penalty_scale = 1.0 / float(np.max(np.asarray(sample_weight, dtype=np.float64)))

    def _callbacks(self, options):
        session = self.session
        checkpoint = options["checkpoint"]
        saver = Checkpoint(checkpoint, options["checkpoint_every"]) if checkpoint is not None else None
        if checkpoint is None:
            check.as_int(options["checkpoint_every"], "checkpoint_every", 1)
        # Built-in callbacks first, in this order, then the user's; the progress bar last. With
        # several ranks the checkpoint and the progress bar are rank 0's.
        root = session is None or session.root
        self.callbacks = ([saver] if saver and root else []) + check_callbacks(options["callbacks"])
        if self.verbose and root:
            self.callbacks.append(ProgressBar())

    @property
    def compiled_epoch_end(self) -> bool:
        """Whether validation and the stopping rule run inside the compiled loop (in-memory data
        in one process); otherwise (MPI, streamed data) they run in Python between calls."""
        return self.session is None and self.stream is None

    def facts(self, net) -> dict:
        """What every rank must agree on (keys with a leading underscore are only gathered)."""
        config = net.get_config()
        facts = {
            key: config[key]
            for key in (
                "layer_sizes",
                "activation",
                "output_activation",
                "loss",
                "dtype",
                "l1",
                "l2",
                "penalty_per_sample",
            )
        }
        optimizer = self.optimizer
        facts.update(
            rows=int(self.X.shape[0]),
            epochs=self.epochs,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            optimizer=(optimizer.name, optimizer.get_config()),
            lr_schedule=(self.schedule.code, self.schedule.parameters().tolist()),
            partitioned=self.partitioned,
            warm_start=self.warm_start,
            sample_weight=self.weighted,
            backend=net.backend,
            clip=tuple(self.clip),
            _weight_max=self.raw_weight_max,
        )
        return facts

    def agreed(self, everyone) -> None:
        """With partitioned data, weights are scaled by the largest weight over all ranks (each
        rank's were scaled by its own), so that the ranks' rows weigh alike."""
        if self.partitioned and self.raw_weight_max is not None:
            largest = max(facts["_weight_max"] for facts in everyone)
            self.weight = (self.weight.astype(np.float64) * (self.raw_weight_max / largest)).astype(self.weight.dtype)
            if self.scaled_penalty:
                self.penalty_scale = 1.0 / largest


def _positive_or_none(value, name) -> float:
    # A finite number > 0, or None (0.0: off).
    if value is None:
        return 0.0
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number > 0 or None, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0 or None, got {value!r}")
    return number


def _stopping(options, validation):
    # early_stopping=True (with the patience, min_delta, restore_best keywords), an EarlyStopping
    # object, or off; the keywords are checked either way.
    early_stopping = options["early_stopping"]
    from_keywords = EarlyStopping(options["patience"], options["min_delta"], options["restore_best"])
    if isinstance(early_stopping, EarlyStopping):
        early_stopping.watches(validation)  # needs validation data for a validation monitor
        return early_stopping
    return from_keywords if check.as_bool(early_stopping, "early_stopping") else None


# The validation score each EarlyStopping monitor needs measured (others: the loss's accuracy).
_SCORE_KINDS = {"val_subset_accuracy": epoch_end.SCORE_SUBSET, "val_r2": epoch_end.SCORE_R2}


# The accuracy a loss's declared score (``LossSpec.score``) measures.
_LOSS_SCORES = {None: epoch_end.SCORE_NONE, "argmax": epoch_end.SCORE_ARGMAX, "threshold": epoch_end.SCORE_THRESHOLD}


def score_kind(stopping, loss) -> int:
    """What the validation score of a fit measures (``layout.SCORE_*``): the monitored score
    of ``stopping`` (an EarlyStopping or None) when it is R² or subset accuracy, else the
    accuracy ``loss`` (its declaration, ``LossSpec``) declares (none for a regression loss)."""
    if stopping is not None and stopping.monitor in _SCORE_KINDS:
        return _SCORE_KINDS[stopping.monitor]
    return _LOSS_SCORES[loss.score]


def score_field(stopping) -> str:
    """The History field the validation score goes to."""
    return "val_score" if stopping is not None and stopping.monitor in _SCORE_KINDS else "val_accuracy"


def stopping_rule(stopping, validation: bool, loss, lr: float) -> epoch_end.Rule:
    """The compiled rule (``epoch_end.Rule``) for an EarlyStopping (or None), the network's loss
    being ``loss`` (its declaration) and the optimizer's rate ``lr``."""
    score = int(score_kind(stopping, loss))
    if stopping is None:
        return epoch_end.Rule(score=score)
    watched = stopping.watches(validation)
    monitor = (
        epoch_end.MONITOR_VAL_SCORE
        if stopping.higher
        else {"loss": epoch_end.MONITOR_LOSS, "val_loss": epoch_end.MONITOR_VAL_LOSS}[watched]
    )
    return epoch_end.Rule(
        mode=epoch_end.STOP_PATIENCE if stopping.rule == "patience" else epoch_end.STOP_NO_IMPROVEMENT,
        monitor=int(monitor),
        patience=float(stopping.patience),
        delta=float(stopping.min_delta),
        restore=bool(stopping.restore_best),
        score=score,
        lr_factor=0.0 if stopping.lr_factor is None else float(stopping.lr_factor),
        min_lr_scale=0.0 if stopping.lr_factor is None else float(stopping.min_lr / lr),
    )


def _validation_inputs(net, X, Y, weight, validation_data, validation_split):
    """Split or check the validation data; returns the training arrays and (X_val, Y_val, row scale)."""
    if validation_data is not None and validation_split is not None:
        raise ValueError("give validation_data or validation_split, not both")
    if validation_split is not None:
        split = check.as_real(validation_split, "validation_split", minimum=0.0)
        n_val = math.ceil(split * X.shape[0])
        if not 0.0 < split < 1.0 or n_val >= X.shape[0]:
            raise ValueError(f"validation_split must be in (0, 1) and leave training rows, got {validation_split}")
        X_val, Y_val = X[-n_val:], Y[-n_val:]
        X, Y, weight = X[:-n_val], Y[:-n_val], weight[:-n_val]
    elif validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        X_val, Y_val, _ = net.check_inputs(*validation_data, names=("validation_data X", "validation_data y"))
    else:
        return X, Y, weight, None
    X_val, Y_val = np.ascontiguousarray(X_val), np.ascontiguousarray(Y_val)
    return X, Y, weight, (X_val, Y_val, net.row_scale(np.ones(X_val.shape[0], dtype=net.dtype)))
