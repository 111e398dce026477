"""Write PyTorch's training trajectories for every optimizer, schedule and clipping rule fastgd
implements, so that tests/test_torch_reference.py compares fastgd against PyTorch everywhere,
PyTorch installed or not.

Run where PyTorch is installed (CPU build), from the repository root::

    python tests/data/make_torch_reference.py

and commit the file it writes (``tests/data/torch_reference.npz``); the test
``test_the_committed_file_is_what_this_script_writes`` fails when the two disagree (run it
again after adding an optimizer configuration to ``fastgd.optimizers.OPTIMIZERS_UNDER_TEST``
or a schedule to ``fastgd.schedules``).

The problem is the one of tests/test_clipping.py: a [4, 6, 3] tanh network with mse and an l2
penalty of 1e-3 on the weights, in float64, trained on 200 rows in batches of 20 without
shuffling for 5 epochs (50 steps). PyTorch trains the module ``Network.to_torch`` gives, with
``torch.optim``, ``torch.optim.lr_scheduler`` and ``torch.nn.utils.clip_grad_*_``. The losses
with a parameter (Huber's δ) train the same network with that loss on the targets times
``target_scale`` (3: outputs in (−1, 1) against targets in about (−4, 4), so that both of
Huber's pieces are taken), against ``torch.nn.functional.huber_loss`` (the mean over every
element, as fastgd's huber with the mean over rows).

Beside the trajectories, each optimizer's steps alone: every ``OPTIMIZERS_UNDER_TEST`` row
steps a vector of parameters through a fixed sequence of gradients (no network, so no sum whose
order could differ), which fastgd's optimizer step must follow to 1e-12.

NAdam keeps its ``mu_product`` in PyTorch's default dtype and fastgd in the parameters': its
cases run with ``torch.set_default_dtype(torch.float64)`` (the parameters are float64).

The file (``numpy.load``, no pickles) holds:

* ``meta``: a JSON string: the PyTorch, NumPy and fastgd versions, the command that wrote it,
  the problem (layer sizes, l2, epochs, batch size) and ``cases``: one entry per trajectory with
  its ``key``, the fastgd optimizer (class name and keyword arguments), the fastgd schedule
  (class name and keyword arguments, or null), the clipping keywords of ``fit``, for the loss
  cases the ``loss`` and the ``target_scale`` (the others train the problem's loss on ``y``),
  and how the PyTorch side was built (``torch``: a readable description); ``steps``: the size of
  the step cases (``count`` steps of ``size`` parameters).
* ``X`` (200, 4), ``y`` (200, 3): the training data.
* ``initial`` (n_params,): the parameters training starts from, in PyTorch's layout: for each
  ``Linear`` in order its weight (n_out, n_in) row by row, then its bias (n_out,).
* ``parameters`` (n_cases, epochs, n_params): PyTorch's parameters after each epoch, same layout.
* ``loss`` (n_cases, epochs): the mean over each epoch's batches of the loss each batch had
  before its step (penalty included), as fastgd's ``History.loss`` defines it.
* ``step_initial`` (size,), ``step_grads`` (count, size): the step cases' starting parameters
  and the gradient of each step; ``step_parameters`` (len(OPTIMIZERS_UNDER_TEST), count, size):
  PyTorch's parameters after each step, one row per ``OPTIMIZERS_UNDER_TEST`` entry, in order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np

import fastgd
from fastgd import schedules
from fastgd.optimizers import OPTIMIZERS_UNDER_TEST

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.npz")
COMMAND = "python tests/data/make_torch_reference.py"

LAYER_SIZES = [4, 6, 3]
L2 = 1e-3
EPOCHS, BATCH, ROWS = 5, 20, 200
STEPS_PER_EPOCH = ROWS // BATCH

CLIPS = {
    "norm": dict(clip_grad_norm=1.2),
    "value": dict(clip_grad_value=0.3),
    "both": dict(clip_grad_value=0.3, clip_grad_norm=1.0),
}

# Every schedule in fastgd.schedules, each with the parameters worth checking (Cosine twice: once
# annealing over the whole run, once reaching eta_min after 30 of the 50 steps and staying there;
# SampleInverseScaling with and without the offset of warm starts).
SCHEDULES = [
    ("Constant", {}),
    ("StepDecay", dict(step_size=7, gamma=0.5)),
    ("Exponential", dict(gamma=0.95)),
    ("InverseScaling", dict(power=0.5)),
    ("Cosine", dict(total_steps=EPOCHS * STEPS_PER_EPOCH, eta_min=0.001)),
    ("Cosine", dict(total_steps=30, eta_min=0.002)),
    ("SampleInverseScaling", dict(rows=ROWS, power=0.5)),
    ("SampleInverseScaling", dict(rows=ROWS, power=0.25, offset=100.0)),
]
# The optimizers every schedule is run with: one whose step is proportional to the rate and one
# whose state does not depend on it.
SCHEDULED_OPTIMIZERS = [("SGD", dict(lr=0.05, momentum=0.9)), ("Adam", dict(lr=0.01))]
# The losses with a parameter, each trained with the same two optimizers (at its default
# parameter: a Network has no setting for it), on the targets times TARGET_SCALE.
PARAMETER_LOSSES = ["huber"]
TARGET_SCALE = 3.0
# The step cases: STEP_COUNT steps of STEP_SIZE parameters.
STEP_COUNT, STEP_SIZE = 20, 16


def problem():
    """The training data and the network it starts from (as tests/test_clipping.py builds them)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(ROWS, LAYER_SIZES[0]))
    y = np.tanh(X @ rng.normal(size=(LAYER_SIZES[0], LAYER_SIZES[-1]))) + 0.1 * rng.normal(size=(ROWS, LAYER_SIZES[-1]))
    net = fastgd.Network(
        LAYER_SIZES, activation="tanh", loss="mse", dtype="float64", random_state=5, l2=L2, backend="numpy"
    )
    return X, y, net


def cases():
    """Every trajectory the file holds, as JSON-ready dicts (see the module docstring)."""
    found = []
    for index, (cls, options) in enumerate(OPTIMIZERS_UNDER_TEST):
        found.append(
            dict(key=f"optimizer/{index}", optimizer=cls.__name__, options=dict(options), schedule=None, clip={})
        )
    declared = sorted(
        name
        for name, value in vars(schedules).items()
        if isinstance(value, type) and issubclass(value, schedules.Schedule) and value is not schedules.Schedule
    )
    listed = sorted({name for name, _ in SCHEDULES})
    if declared != listed:
        raise SystemExit(
            f"fastgd.schedules declares {declared} but this script covers {listed}: add the missing ones to SCHEDULES"
        )
    for name, parameters in SCHEDULES:
        for optimizer, options in SCHEDULED_OPTIMIZERS:
            arguments = ",".join(f"{k}={v}" for k, v in parameters.items())
            found.append(
                dict(
                    key=f"schedule/{name}({arguments})/{optimizer}",
                    optimizer=optimizer,
                    options=dict(options),
                    schedule=[name, dict(parameters)],
                    clip={},
                )
            )
    for rule, clip in CLIPS.items():
        for index, (cls, options) in enumerate(OPTIMIZERS_UNDER_TEST):
            found.append(
                dict(
                    key=f"clip/{rule}/{index}",
                    optimizer=cls.__name__,
                    options=dict(options),
                    schedule=None,
                    clip=dict(clip),
                )
            )
    for loss in PARAMETER_LOSSES:
        for optimizer, options in SCHEDULED_OPTIMIZERS:
            found.append(
                dict(
                    key=f"loss/{loss}/{optimizer}",
                    optimizer=optimizer,
                    options=dict(options),
                    schedule=None,
                    clip={},
                    loss=loss,
                    target_scale=TARGET_SCALE,
                )
            )
    for case in found:
        case["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in case["options"].items()}
    return found


def torch_optimizer(torch, parameters, name, options):
    """``torch.optim``'s optimizer for a fastgd optimizer, and a description of it.

    fastgd's optimizers carry PyTorch's names and options, except ``Momentum`` (an exponential
    average, v ← βv + (1 − β)g, p ← p − lr·v): that is ``torch.optim.SGD`` with momentum β and
    rate lr·(1 − β), whose buffer b = Σ β^(t−k) g_k is v / (1 − β) from the first step on.
    """
    if name == "Momentum":
        beta = options.get("beta", 0.9)
        lr = options.get("lr", 0.01) * (1.0 - beta)
        return torch.optim.SGD(parameters, lr=lr, momentum=beta), f"torch.optim.SGD(lr={lr!r}, momentum={beta!r})"
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    arguments = ", ".join(f"{k}={v!r}" for k, v in options.items())
    return getattr(torch.optim, name)(parameters, **options), f"torch.optim.{name}({arguments})"


def torch_schedule(torch, optimizer, schedule):
    """``torch.optim.lr_scheduler``'s scheduler for a fastgd schedule, whether it steps once per
    optimizer step ("step") or once per epoch ("epoch"), and a description of it."""
    if schedule is None:
        return None, None, "none"
    name, parameters = schedule
    lr_scheduler = torch.optim.lr_scheduler
    if name == "Constant":
        return None, None, "none"
    if name == "StepDecay":
        step_size, gamma = parameters["step_size"], parameters.get("gamma", 0.1)
        return (
            lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma),
            "step",
            f"StepLR(step_size={step_size}, gamma={gamma})",
        )
    if name == "Exponential":
        return (
            lr_scheduler.ExponentialLR(optimizer, gamma=parameters["gamma"]),
            "step",
            f"ExponentialLR(gamma={parameters['gamma']})",
        )
    if name == "InverseScaling":
        # PyTorch has no inverse-scaling scheduler; LambdaLR takes its factor 1/t^power (t = k + 1
        # after k scheduler steps), as a PyTorch user writes it.
        power = parameters.get("power", 0.5)
        return (
            lr_scheduler.LambdaLR(optimizer, lambda k: (k + 1.0) ** -power),
            "step",
            f"LambdaLR(lambda k: (k + 1) ** -{power})",
        )
    if name == "Cosine":
        total, eta_min = parameters["total_steps"], parameters.get("eta_min", 0.0)
        cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=eta_min)
        if total >= EPOCHS * STEPS_PER_EPOCH:
            return cosine, "step", f"CosineAnnealingLR(T_max={total}, eta_min={eta_min})"
        # fastgd stays at eta_min after total_steps; CosineAnnealingLR would rise again, so it is
        # followed by a constant eta_min (ConstantLR's factor on the initial rate).
        factor = eta_min / optimizer.param_groups[0]["initial_lr"]
        constant = lr_scheduler.ConstantLR(optimizer, factor=factor, total_iters=10**9)
        description = (
            f"SequentialLR([CosineAnnealingLR(T_max={total}, eta_min={eta_min}), ConstantLR(factor={factor!r})], "
            f"milestones=[{total}])"
        )
        return lr_scheduler.SequentialLR(optimizer, [cosine, constant], milestones=[total]), "step", description
    if name == "SampleInverseScaling":
        # scikit-learn's invscaling: the rate of epoch e (0-based) is lr / (1 + offset + rows·e)^power.
        rows, power, offset = parameters["rows"], parameters.get("power", 0.5), parameters.get("offset", 0.0)
        factor = lambda e: (1.0 + offset + rows * e) ** -power  # noqa: E731
        return (
            lr_scheduler.LambdaLR(optimizer, factor),
            "epoch",
            f"LambdaLR(lambda e: (1 + {offset} + {rows}·e) ** -{power}), stepped per epoch",
        )
    raise SystemExit(f"no PyTorch scheduler for fastgd schedule {name!r}: add it to torch_schedule")


def flat(torch, model):
    """The module's parameters in PyTorch's layout: each Linear's weight row by row, then its bias."""
    with torch.no_grad():
        return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


class default_dtype:
    """``torch.set_default_dtype(dtype)`` inside, the previous default after: NAdam keeps its
    ``mu_product`` in the default dtype (fastgd in the parameters', float64 here)."""

    def __init__(self, torch, dtype):
        self.torch, self.dtype = torch, dtype

    def __enter__(self):
        self.previous = self.torch.get_default_dtype()
        self.torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        self.torch.set_default_dtype(self.previous)
        return False


def defaults_for(torch, optimizer):
    """The default dtype an optimizer's PyTorch run takes (float64 for NAdam, else as it is)."""
    return default_dtype(torch, torch.float64 if optimizer == "NAdam" else torch.get_default_dtype())


def batch_loss(torch, case, out, target):
    """The case's loss of a batch, as fastgd defines it (its mean over rows of the row losses)."""
    loss = case.get("loss", "mse")
    if loss == "mse":  # fastgd's mse, (1/2n)·Σ‖a − y‖²
        return 0.5 * ((out - target) ** 2).sum() / out.shape[0]
    if loss == "huber":  # fastgd's huber (δ = 1): PyTorch's HuberLoss, the mean over every element
        return torch.nn.functional.huber_loss(out, target, reduction="mean", delta=1.0)
    raise SystemExit(f"no PyTorch loss for fastgd loss {loss!r}: add it to batch_loss")


def trajectory(torch, net, X, y, case):
    """Train ``net.to_torch()`` with PyTorch as ``case`` says; returns the parameters after each
    epoch (epochs, n_params), each epoch's mean batch loss (epochs,) and a description."""
    with defaults_for(torch, case["optimizer"]):
        return _trajectory(torch, net, X, y, case)


def _trajectory(torch, net, X, y, case):
    model = net.to_torch()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    optimizer, described = torch_optimizer(torch, model.parameters(), case["optimizer"], case["options"])
    scheduler, every, scheduled = torch_schedule(torch, optimizer, case["schedule"])
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y * case.get("target_scale", 1.0))
    weights = [layer.weight for layer in model if isinstance(layer, torch.nn.Linear)]
    clip = case["clip"]
    parameters, losses = [], []
    for _ in range(EPOCHS):
        total = 0.0
        for step in range(STEPS_PER_EPOCH):
            rows = slice(step * BATCH, (step + 1) * BATCH)
            optimizer.zero_grad()
            out = model(Xt[rows])
            # the batch's loss plus fastgd's l2 penalty (l2/2)·ΣW² on the weights only.
            loss = batch_loss(torch, case, out, yt[rows]) + 0.5 * L2 * sum((W**2).sum() for W in weights)
            loss.backward()
            total += loss.item()
            if "clip_grad_value" in clip:  # value first, then norm: fastgd's order
                torch.nn.utils.clip_grad_value_(model.parameters(), clip["clip_grad_value"])
            if "clip_grad_norm" in clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip["clip_grad_norm"])
            optimizer.step()
            if every == "step":
                scheduler.step()
        if every == "epoch":
            scheduler.step()
        parameters.append(flat(torch, model))
        losses.append(total / STEPS_PER_EPOCH)
    description = described + ("" if scheduled == "none" else f" with lr_scheduler.{scheduled}")
    if "loss" in case:
        description += f" on torch.nn.functional.huber_loss(delta=1.0) against y * {case['target_scale']}"
    if clip:
        description += " and " + ", ".join(
            f"torch.nn.utils.{k}_(max_{'norm' if k.endswith('norm') else 'value'}={v})"
            for k, v in sorted(clip.items(), key=lambda item: item[0] != "clip_grad_value")
        )
    return np.array(parameters), np.array(losses), description


def steps(torch):
    """The step cases: PyTorch's parameters after each of STEP_COUNT steps of every
    ``OPTIMIZERS_UNDER_TEST`` row, from one starting vector through one sequence of gradients."""
    rng = np.random.default_rng(11)
    initial = rng.normal(size=STEP_SIZE)
    grads = rng.normal(size=(STEP_COUNT, STEP_SIZE))
    found = []
    for cls, options in OPTIMIZERS_UNDER_TEST:
        with defaults_for(torch, cls.__name__):
            parameter = torch.nn.Parameter(torch.from_numpy(initial.copy()))
            optimizer, _ = torch_optimizer(torch, [parameter], cls.__name__, dict(options))
            after = []
            for g in grads:
                parameter.grad = torch.from_numpy(g.copy())
                optimizer.step()
                after.append(parameter.detach().numpy().copy())
        found.append(after)
    return initial, grads, np.array(found)


def build():
    """Every trajectory; returns the arrays of the file (see the module docstring)."""
    import torch

    torch.set_num_threads(1)  # one thread: the same sums on any machine with the same CPU kind
    X, y, net = problem()
    all_cases = cases()
    parameters, losses = [], []
    for case in all_cases:
        trained, loss, case["torch"] = trajectory(torch, net, X, y, case)
        if not np.isfinite(trained).all():
            raise SystemExit(f"{case['key']}: PyTorch's trajectory is not finite")
        parameters.append(trained)
        losses.append(loss)
    step_initial, step_grads, step_parameters = steps(torch)
    if not np.isfinite(step_parameters).all():
        raise SystemExit("PyTorch's steps are not finite")
    meta = dict(
        torch_version=torch.__version__,
        numpy_version=np.__version__,
        fastgd_version=fastgd.__version__,
        python_version=platform.python_version(),
        command=COMMAND,
        layer_sizes=LAYER_SIZES,
        activation="tanh",
        loss="mse",
        l2=L2,
        epochs=EPOCHS,
        batch_size=BATCH,
        rows=ROWS,
        shuffle=False,
        cases=all_cases,
        steps=dict(count=STEP_COUNT, size=STEP_SIZE),
    )
    return dict(
        meta=np.array(json.dumps(meta, indent=1)),
        X=X,
        y=y,
        initial=flat(torch, net.to_torch()),
        parameters=np.array(parameters),
        loss=np.array(losses),
        step_initial=step_initial,
        step_grads=step_grads,
        step_parameters=step_parameters,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="the file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    arrays = build()
    np.savez_compressed(args.output, **arrays)
    meta = json.loads(str(arrays["meta"]))
    print(
        f"wrote {args.output}: {len(meta['cases'])} trajectories, PyTorch {meta['torch_version']}, "
        f"{os.path.getsize(args.output) / 1024:.0f} KiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
