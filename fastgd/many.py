"""``fit_many``: many networks trained at once on one ``X, y``, in one compiled call per group.

A grid or random search, the folds of a cross-validation, several seeds, an ensemble: many
small fits, each of which pays its fixed costs (checks, buffers, a compiled call, the threads'
start) alone when run one after another. ``fit_many`` checks every argument of every model
first, then trains the models of each architecture in one compiled call
(``fastgd.kernels.many``), spread over the threads, each model with its own rows, weights,
optimizer, schedule, batch size, validation rows and stopping rule. Each model ends as its own
``Network.fit`` on ``X[rows]`` would leave it, to rounding (the products sum in another order).

Networks whose layers are large enough for BLAS (``Architecture.blas``) gain nothing from
sharing a call, and train one after another through ``fit`` itself, at its speed.
"""

from __future__ import annotations

import copy
import warnings
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from . import _validation as check
from . import memory
from ._threads import team_size
from .history import History
from .kernels import epoch_end, layout
from .kernels import many as kernel
from .kernels.optim import HYPER_WIDTH, SCHEDULE_WIDTH
from .optimizers import SGD, make_optimizer
from .schedules import make_schedule
from .training import interrupt
from .training.callbacks import EarlyStopping
from .training.driver import MAX_CHUNK_EPOCHS, DivergenceError, DivergenceWarning, fit
from .training.plan import ON_DIVERGENCE, _positive_or_none, score_field, stopping_rule

# Arguments that may be given once for every model or as a list with one entry per model.
PER_MODEL = ("optimizers", "batch_size", "rows", "sample_weights", "validation_rows", "early_stopping", "lr_schedule")


def fit_many(
    networks,
    X,
    y,
    *,
    optimizers=None,
    epochs=1,
    batch_size=None,
    shuffle=True,
    rows=None,
    sample_weights=None,
    validation_rows=None,
    early_stopping=False,
    patience=10,
    min_delta=0.0,
    restore_best=True,
    lr_schedule=None,
    clip_grad_norm=None,
    clip_grad_value=None,
    on_divergence="raise",
    warm_start=True,
    n_threads=None,
) -> list:
    """Train every network of ``networks`` on its rows of ``X, y`` at once.

    Model ``i`` ends as ``networks[i].fit(X[rows[i]], y[rows[i]], optimizer=optimizers[i],
    sample_weight=sample_weights[i], validation_data=(X[validation_rows[i]],
    y[validation_rows[i]]), ...)`` would leave it (float64 to about 1e-12, float32 to about
    1e-5: the same steps, with sums in another order), whatever the number of networks, their
    order or the threads.

    Parameters
    ----------
    networks : sequence of Network
        Distinct networks, all of one dtype and all with ``X.shape[1]`` inputs. Those that share
        an architecture, activations, dropout rates and loss train in the same compiled call.
    X : array-like, shape (n, n_in)
    y : array-like, shape (n, n_out) or (n,)
        Targets, as ``fit`` takes them (class labels for crossentropy).
    optimizers : Optimizer, str, None or a list of them (one per network)
        As ``fit``'s ``optimizer``: None continues with the network's own (or ``SGD(lr=0.01)``);
        any other instance starts fresh state. One instance may serve several networks (it holds
        settings only; each network keeps its own state).
    epochs : int, default 1
        Epochs of every model (a model whose stopping rule ends it trains fewer).
    batch_size : int, None or a list of them
        As ``fit``'s; per model when a list.
    shuffle : bool, default True
        As ``fit``'s (each network shuffles with its own seed).
    rows : list of array-like of int, optional
        Each model's training rows of ``X`` (a fold, a bootstrap sample: repeats allowed).
        Default: every row for every model.
    sample_weights : array-like (n,), or a list with one array per model, optional
        One array of ``n`` weights (each model takes its rows' weights), or per model one weight
        per entry of its ``rows``.
    validation_rows : list of (array-like of int or None), optional
        Each model's validation rows of ``X``: its ``history.val_loss`` (and ``val_accuracy``
        for classifiers) after each epoch, and what its early stopping watches.
    early_stopping : bool, EarlyStopping or a list of them, default False
        As ``fit``'s, per model: a stopped model costs nothing more. An ``EarlyStopping`` given
        once is copied for each model; a list's objects are each model's own and keep its rule's
        state afterwards. ``resume=True`` is not available here.
    patience, min_delta, restore_best
        As ``fit``'s, with ``early_stopping=True``.
    lr_schedule : Schedule, None or a list of them
        As ``fit``'s, per model when a list.
    clip_grad_norm, clip_grad_value : float > 0, optional
        As ``fit``'s.
    on_divergence : {"raise", "warn"}, default "raise"
        A model whose loss or parameters become NaN or infinite is put back to the end of its
        last finite epoch; the others train on. Then "raise" raises :class:`DivergenceError`
        (for the first such model, every model's training done), "warn" warns for each.
    warm_start : bool, default True
        As ``fit``'s.
    n_threads : int, optional
        Threads sharing the models (default: as ``fit``'s). Results do not depend on it.

    Returns
    -------
    list of History
        Each model's history of this call (also appended to ``networks[i].history``).

    Raises
    ------
    ValueError, TypeError
        For any bad argument, naming it, before any network changes.
    KeyboardInterrupt
        On Ctrl-C: every model stops at its last completed epoch (those not yet started are
        unchanged), and then it is raised.
    DivergenceError
        See ``on_divergence``.

    Notes
    -----
    Not available here (they act on one fit's progress): callbacks, ``verbose``, checkpoints,
    ``validation_data``/``validation_split`` (use ``validation_rows``), gradient tracking,
    ``grad_shards``, MPI and streamed data.
    """
    nets = _networks(networks)
    count = len(nets)
    data = _Data(nets, X, y)
    optimizer_list = _per_model(optimizers, count, "optimizers")
    batch_list = [
        check.as_int(b, "batch_size", 1, allow_none=True) for b in _per_model(batch_size, count, "batch_size")
    ]
    schedules = [make_schedule(s) for s in _per_model(lr_schedule, count, "lr_schedule")]
    row_list = data.rows(rows, count)
    weights = data.weights(nets, sample_weights, row_list)
    val_list = data.validation_rows(validation_rows, count)
    epochs = check.as_int(epochs, "epochs", 0)
    shuffle = check.as_bool(shuffle, "shuffle")
    warm_start = check.as_bool(warm_start, "warm_start")
    clip = (_positive_or_none(clip_grad_norm, "clip_grad_norm"), _positive_or_none(clip_grad_value, "clip_grad_value"))
    if not isinstance(on_divergence, str) or on_divergence not in ON_DIVERGENCE:
        raise ValueError(f"on_divergence must be one of {list(ON_DIVERGENCE)}, got {on_divergence!r}")
    threads = team_size(check.as_int(n_threads, "n_threads", 1, allow_none=True))
    chosen = []
    for net, given in zip(nets, optimizer_list):
        if given is None:
            chosen.append(net.optimizer if net.optimizer is not None else SGD(lr=0.01))
        else:
            chosen.append(make_optimizer(given))
    stoppings = _stoppings(early_stopping, count, patience, min_delta, restore_best, val_list)
    _check_memory(nets, chosen, row_list, val_list, batch_list, epochs, threads)
    # Every argument is checked: from here on the networks change.
    models = []
    for index, net in enumerate(nets):
        if not warm_start:
            net.restart()
        if chosen[index] is not net.optimizer or not warm_start:
            net.set_optimizer(chosen[index])
        models.append(
            _Model(index, net, row_list[index], weights[index], val_list[index], batch_list[index], schedules[index])
        )
        models[-1].stopping = stoppings[index]
    histories = [History() for _ in nets]
    if epochs == 0:
        return histories
    large = [model for model in models if model.net.architecture.blas or model.net.backend != "numba"]
    small = [model for model in models if not (model.net.architecture.blas or model.net.backend != "numba")]
    run = _Call(data, small, epochs, shuffle, clip, threads)
    run.train(histories)
    for model in large:
        histories[model.index] = _fit_alone(model, data, epochs, shuffle, clip, on_divergence)
    failures = [model for model in models if model.outcome == layout.OUTCOME_DIVERGED]
    for model in failures:
        if on_divergence == "warn":
            warning = DivergenceWarning(
                f"networks[{model.index}]: training diverged in epoch {model.completed + 1} of this call; it was put "
                "back to its last finite epoch"
            )
            warning.network = model.index  # (which network, for code that catches the warnings)
            warnings.warn(warning, stacklevel=2)
    if failures and on_divergence == "raise":
        first = failures[0]
        raise DivergenceError(
            f"networks[{first.index}]: training diverged in epoch {first.completed + 1} of this call "
            f"({len(failures)} of {count} models diverged; each was put back to its last finite epoch, the others "
            "trained on). Try a smaller learning rate.",
            epoch=first.completed + 1,
            history=histories[first.index],
        )
    return histories


# --------------------------------------------------------------------------- checks


def _networks(networks):
    from .network import Network

    if isinstance(networks, Network) or not isinstance(networks, (list, tuple)):
        raise TypeError(f"networks must be a list of fastgd.Network, got {type(networks).__name__}")
    if not networks:
        raise ValueError("networks must hold at least one network")
    for index, net in enumerate(networks):
        if not isinstance(net, Network):
            raise TypeError(f"networks[{index}] must be a fastgd.Network, got {type(net).__name__}")
    if len({id(net) for net in networks}) != len(networks):
        raise ValueError("networks must be distinct objects (the same network appears twice)")
    dtypes = {net.dtype for net in networks}
    if len(dtypes) > 1:
        raise ValueError(f"networks must share one dtype, got {sorted(str(d) for d in dtypes)}")
    return list(networks)


def _per_model(value, count, name):
    # One value for every model, or a list (or tuple) with one per model.
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name} must have one entry per network ({count}), got {len(value)}")
        return list(value)
    return [value] * count


class _Data:
    """``X`` and, per group of networks with the same outputs and loss, ``Y``, checked once."""

    def __init__(self, nets, X, y):
        first = nets[0]
        self.X = check.as_matrix(X, "X", first.dtype, n_cols=first.layer_sizes[0])
        self.n = self.X.shape[0]
        self._y = y
        self._targets = {}
        for net in nets:
            if net.layer_sizes[0] != self.X.shape[1]:
                raise ValueError(f"X has {self.X.shape[1]} columns but a network takes {net.layer_sizes[0]} inputs")
            self.targets(net)

    def targets(self, net):
        key = (net.layer_sizes[-1], net.get_config()["loss"])
        if key not in self._targets:
            self._targets[key] = net.check_inputs(self.X, self._y)[1]
        return self._targets[key]

    def _indices(self, value, name):
        array = check.as_array(value, name)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array of row indices, got shape {array.shape}")
        if array.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer row indices, got {array.dtype}")
        if array.min() < 0 or array.max() >= self.n:
            raise ValueError(f"{name} must index rows of X (0 to {self.n - 1})")
        return np.ascontiguousarray(array, dtype=np.int64)

    def rows(self, rows, count):
        if rows is None:
            return [np.arange(self.n, dtype=np.int64)] * count
        if not isinstance(rows, (list, tuple)):
            raise TypeError("rows must be a list with one array of row indices per network")
        values = _per_model(rows, count, "rows")
        return [self._indices(value, f"rows[{index}]") for index, value in enumerate(values)]

    def validation_rows(self, rows, count):
        if rows is None:
            return [None] * count
        if not isinstance(rows, (list, tuple)):
            raise TypeError("validation_rows must be a list with one array of row indices (or None) per network")
        values = _per_model(rows, count, "validation_rows")
        return [
            None if value is None else self._indices(value, f"validation_rows[{index}]")
            for index, value in enumerate(values)
        ]

    def weights(self, nets, sample_weights, row_list):
        # Each model's (weights or None, the factor on its penalties).
        dtype = nets[0].dtype
        if sample_weights is None:
            return [(None, 1.0)] * len(nets)
        if isinstance(sample_weights, (list, tuple)):
            given = _per_model(sample_weights, len(nets), "sample_weights")
        else:
            whole = check.as_sample_weight(sample_weights, np.float64, self.n)
            given = [whole[rows] for rows in row_list]
        weights = []
        for index, (net, value, rows) in enumerate(zip(nets, given, row_list)):
            try:
                weight = check.as_sample_weight(value, dtype, rows.size)
            except (TypeError, ValueError) as error:
                raise type(error)(f"sample_weights[{index}]: {error}") from None
            largest, penalty_scale = float(weight.max()), 1.0
            if net.loss_spec.mean:  # as Network.check_inputs...
                weight = (weight.astype(np.float64) / largest).astype(dtype)
                # ...and as fit's plan: penalties per sample are per unit of the weights given
                penalty_scale = 1.0 / largest if net.penalty_per_sample else 1.0
            weights.append((weight, penalty_scale))
        return weights


def _stoppings(early_stopping, count, patience, min_delta, restore_best, val_list):
    given = _per_model(early_stopping, count, "early_stopping")
    from_keywords = EarlyStopping(patience, min_delta, restore_best)
    stoppings = []
    for index, value in enumerate(given):
        if isinstance(value, EarlyStopping):
            if value.resume:
                raise ValueError(f"early_stopping[{index}]: resume=True is not available in fit_many")
            value = value if isinstance(early_stopping, (list, tuple)) else copy.deepcopy(value)
            value.reset()
            value.watches(val_list[index] is not None)
        elif check.as_bool(value, "early_stopping"):
            value = copy.deepcopy(from_keywords)
        else:
            value = None
        stoppings.append(value)
    return stoppings


def _check_memory(nets, optimizers, row_list, val_list, batch_list, epochs, threads):
    # The call's arrays: every model's parameters, state, best parameters and rows, and each
    # thread's buffers for the largest model.
    per_model, per_thread = 0, 0
    for net, optimizer, rows, val, batch in zip(nets, optimizers, row_list, val_list, batch_list):
        item = net.dtype.itemsize
        slots = max(len(optimizer.state_names), 1)
        per_model += item * net.n_params * (3 + slots) + 16 * (rows.size + (0 if val is None else val.size))
        per_model += 24 * max(1, min(epochs, MAX_CHUNK_EPOCHS))
        units = net.architecture.units + net.layer_sizes[0]
        b = rows.size if batch is None else min(batch, rows.size)
        per_thread = max(per_thread, item * units * 4 * (b + (0 if val is None else val.size)) + 16 * rows.size)
    estimate = memory.Estimate(
        models=memory.Part(per_model, "layers"), buffers=memory.Part(per_thread * threads, "rows", per_thread)
    )
    memory.check(estimate, {"layers": ("networks", None), "rows": ("rows", None)})


# --------------------------------------------------------------------------- the run


class _Model:
    """One network's part of the call: its rows, weights, validation rows, batch, schedule and
    stopping rule, and after the call its outcome and completed epochs."""

    def __init__(self, index, net, rows, weight, val, batch, schedule):
        self.index, self.net, self.rows, self.val = index, net, rows, val
        weight, self.penalty_scale = weight
        self.weight = np.ones(rows.size, dtype=net.dtype) if weight is None else weight
        self.batch = rows.size if batch is None else min(batch, rows.size)
        self.schedule = schedule
        self.stopping = None
        self.outcome = layout.OUTCOME_FINISHED
        self.completed = 0

    def group_key(self):
        net = self.net
        layers = net.architecture.layers
        return (
            tuple(net.layer_sizes),
            tuple(int(code) for code in layers["activation"]),
            tuple(float(rate) for rate in layers["dropout"]),
            net.loss_code,
            float(net.loss_parameter),
            bool(net.penalty_per_sample),
        )


class _Call:
    """The compiled calls of every group, spread over ``threads`` threads (see ``train``)."""

    def __init__(self, data, models, epochs, shuffle, clip, threads):
        self.data, self.epochs, self.shuffle, self.clip, self.threads = data, epochs, shuffle, clip, threads
        # Epochs per compiled call: the losses and records of a call are (models, capacity).
        self.capacity = max(1, min(epochs, MAX_CHUNK_EPOCHS))
        self.groups = {}
        for model in models:
            self.groups.setdefault(model.group_key(), []).append(model)
        self.control = layout.make_control()

    def _bundles(self, group):
        net = group[0].net
        dtype, n_params = net.dtype, net.n_params
        spec = net.loss_spec
        shared = kernel.Shared(
            self.data.X,
            self.data.targets(net),
            int(net.loss_code),
            float(net.loss_parameter),
            bool(spec.fused),
            bool(spec.mean),
            bool(net.penalty_per_sample),
        )
        count = len(group)
        slots = max(model.net.train_state().opt_state.shape[0] for model in group)
        state = np.zeros((count, slots, n_params), dtype=dtype)
        specs = np.zeros(count, dtype=kernel.MODEL)
        hyper, schedule = np.zeros((count, HYPER_WIDTH)), np.zeros((count, SCHEDULE_WIDTH))
        rule_state = np.zeros(count, dtype=epoch_end.RULE_STATE)
        restore = any(model.stopping is not None and model.stopping.restore_best for model in group)
        for m, model in enumerate(group):
            self._describe(model, specs[m], hyper[m], schedule[m], rule_state[m : m + 1])
            own = model.net.train_state().opt_state
            state[m, : own.shape[0]] = own
        val = [np.zeros(0, dtype=np.int64) if model.val is None else model.val for model in group]
        return (
            net.architecture,
            shared,
            kernel.Models(
                specs,
                hyper,
                schedule,
                np.stack([model.net.flat_parameters for model in group]),
                state,
                np.array([model.net.optimizer_steps for model in group], dtype=np.int64),
                np.concatenate([model.rows for model in group]),
                np.cumsum([0] + [model.rows.size for model in group]).astype(np.int64),
                np.concatenate([model.weight for model in group]),
                np.concatenate(val),
                np.cumsum([0] + [rows.size for rows in val]).astype(np.int64),
                rule_state,
                np.zeros((count, n_params) if restore else (count, 1), dtype=dtype),
                np.full((count, self.capacity), np.nan),
                np.full((count, self.capacity), np.nan, dtype=epoch_end.RECORD),
                np.zeros(count, dtype=np.int64),
                np.full(count, kernel.NOT_RUN, dtype=np.int64),
            ),
        )

    def _describe(self, model, spec, hyper, schedule, rule_state):
        net, optimizer = model.net, model.net.optimizer
        spec["optimizer"], spec["lr"] = optimizer.code, float(optimizer.lr)
        vector = optimizer.hyper_vector()
        hyper[: vector.size] = vector
        spec["schedule_kind"] = model.schedule.code
        parameters = model.schedule.parameters()
        schedule[: parameters.size] = parameters
        spec["batch"], spec["shuffle"] = model.batch, int(self.shuffle)
        spec["seed"], spec["first_epoch"], spec["offset"], spec["active"] = net.shuffle_seed, net.epochs_trained, 0, 1
        spec["l1"], spec["l2"] = net.l1 * model.penalty_scale, net.l2 * model.penalty_scale
        spec["clip_norm"], spec["clip_value"] = self.clip
        rule = stopping_rule(model.stopping, model.val is not None, net.loss_spec, float(optimizer.lr))
        for field in ("mode", "monitor", "patience", "delta", "restore", "score", "lr_factor", "min_lr_scale"):
            spec[field] = getattr(rule, field)
        rule_state[...] = epoch_end.make_rule_state(rule)

    def train(self, histories):
        """Train every group, ``capacity`` epochs per call; write each model's result back into
        its network and history."""
        calls = [(group, *self._bundles(group)) for group in self.groups.values()]
        function = kernel.train_models
        tasks = []
        for group, architecture, shared, models in calls:
            if group[0].net.backend != "numba":
                function = getattr(function, "py_func", function)
            # Compiled (or loaded) here, in this thread, before the threads start.
            function(self.control, architecture, shared, models, 0, 0, 0)
            pieces = min(len(group), self.threads * 4)
            for piece in range(pieces):
                first, stop = piece * len(group) // pieces, (piece + 1) * len(group) // pieces
                tasks.append((architecture, shared, models, first, stop))
            for model in group:
                model.losses, model.records = [], []
        with interrupt.StopRequest(self.control) as stop:
            left = self.epochs
            while left > 0 and not stop.requested:
                count = min(left, self.capacity)
                self._run(function, tasks, stop, count)
                active = self._collect(calls)
                left -= count
                if not active:
                    break
            for group, _, _, models in calls:
                for m, model in enumerate(group):
                    self._finish(model, models, m, histories[model.index])
        if stop.requested:
            raise KeyboardInterrupt

    def _collect(self, calls):
        # After a call: each model's epochs of it, and whether any model trains on.
        active = False
        for group, _, _, models in calls:
            for m, model in enumerate(group):
                spec = models.spec[m]
                if not spec["active"]:
                    continue
                outcome, completed = int(models.outcome[m]), int(models.completed[m])
                model.outcome = layout.OUTCOME_INTERRUPTED if outcome == kernel.NOT_RUN else outcome
                model.losses.append(models.losses[m, :completed].copy())
                model.records.append(models.records[m, :completed].copy())
                model.completed += completed if outcome != kernel.NOT_RUN else 0
                spec["first_epoch"] += completed
                spec["offset"] += completed
                if model.outcome == layout.OUTCOME_FINISHED:
                    active = True
                else:
                    spec["active"] = 0
        return active

    def _run(self, function, tasks, stop, epochs):
        def run(task):
            architecture, shared, models, first, end = task
            function(self.control, architecture, shared, models, first, end, epochs)

        if self.threads == 1 or len(tasks) == 1:
            for task in tasks:
                # (a helper thread while SIGINT is ours: Ctrl-C is seen while the call runs)
                interrupt.call(lambda task=task: run(task), stop, interrupt.THREAD_MIN_MACS)
            return
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="fastgd-fit-many") as pool:
            futures = [pool.submit(run, task) for task in tasks]
            pending = futures
            while pending:
                try:
                    _, pending = wait(pending, timeout=0.1)
                except KeyboardInterrupt:
                    stop.request()
            for future in futures:
                future.result()

    def _finish(self, model, models, m, history):
        net, stopping, done = model.net, model.stopping, model.completed
        if done == 0 and model.outcome == layout.OUTCOME_INTERRUPTED:
            return  # a stop came before its first epoch ended: unchanged
        net.flat_parameters[...] = models.params[m]
        live = net.train_state()
        live.opt_state[...] = models.state[m, : live.opt_state.shape[0]]
        live.step[0] = models.steps[m]
        field = score_field(stopping)
        losses = np.concatenate(model.losses) if model.losses else np.zeros(0)
        records = np.concatenate(model.records) if model.records else np.zeros(0, dtype=epoch_end.RECORD)
        for target in (history, net.history):
            target.loss.extend(losses.tolist())
            if model.val is not None:
                target.val_loss.extend(records["val_loss"].tolist())
                if field == "val_score" or not np.isnan(records["val_score"]).all():
                    getattr(target, field).extend(records["val_score"].tolist())
        net.epochs_trained += done
        if model.outcome in (layout.OUTCOME_STOPPED, layout.OUTCOME_DIVERGED):
            history.stopped_epoch = done
        state = models.rule_state[m]
        if state["best_epoch"] > 0:
            history.best_epoch = int(state["best_epoch"])
        if stopping is not None:
            stopping.best, stopping.waited = float(state["best"]), float(state["waited"])
            stopping.lr_scale = float(state["lr_scale"])
            if stopping.restore_best and state["snapshot"]:
                stopping.best_parameters = models.best[m].copy()
                if model.outcome != layout.OUTCOME_INTERRUPTED:
                    net.flat_parameters[...] = models.best[m]


def _fit_alone(model, data, epochs, shuffle, clip, on_divergence):
    # A network too large to gain from sharing a call: fit itself, with the same arguments.
    net = model.net
    Y = data.targets(net)
    validation = None if model.val is None else (data.X[model.val], Y[model.val])
    history = fit(
        net,
        data.X[model.rows],
        Y[model.rows],
        optimizer=net.optimizer,
        epochs=epochs,
        batch_size=model.batch,
        shuffle=shuffle,
        sample_weight=model.weight,
        validation_data=validation,
        early_stopping=model.stopping if model.stopping is not None else False,
        lr_schedule=model.schedule,
        clip_grad_norm=clip[0] or None,
        clip_grad_value=clip[1] or None,
        on_divergence=on_divergence,
    )
    model.completed = len(history.loss)
    return history
