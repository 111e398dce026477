# stamp: f252bbc09d19a572aad42031c7cceab7
"""Learning-rate schedules, applied per optimizer step inside the training loop.

Each schedule is declared once in ``SPECS`` (code and parameter names: the layout of the float64
``schedule`` vector the loop reads); ``scheduled_lr`` reads the parameters by name, and
``fastgd.schedules`` builds its classes' vectors from the same declarations. t is the 1-based
step count of the optimizer.

constant: lr; step: lr·γ^⌊(t−1)/step_size⌋; exponential: lr·γ^(t−1); inverse scaling:
lr / t^power; cosine: η_min + (lr − η_min)(1 + cos(π·min(t−1, T)/T))/2; sample inverse scaling
(scikit-learn's ``invscaling``, constant within an epoch): lr / (1 + offset + rows·e)^power, e the
network's 0-based epoch, so that 1 + offset + rows·e counts the samples seen before the epoch.
"""

from __future__ import annotations

from collections import namedtuple
from typing import NamedTuple

import numpy as np

from .jit import helper, kernel

SCHEDULE_CONSTANT = 0
SCHEDULE_STEP = 1
SCHEDULE_EXPONENTIAL = 2
SCHEDULE_INVERSE_SCALING = 3
SCHEDULE_COSINE = 4
SCHEDULE_SAMPLE_INVERSE_SCALING = 5

# Length of every schedule's parameter vector (the longest declaration).
SCHEDULE_WIDTH = 3


class ScheduleSpec(NamedTuple):
    name: str
    code: int
    parameters: tuple  # names, the layout of the float64 parameter vector

    @property
    def index(self):
        return namedtuple(f"{self.name.title().replace('_', '')}Parameters", self.parameters)(*range(len(self.parameters)))


SPECS = {
    spec.code: spec
    for spec in (
        ScheduleSpec("constant", SCHEDULE_CONSTANT, ()),
        ScheduleSpec("step", SCHEDULE_STEP, ("step_size", "gamma")),
        ScheduleSpec("exponential", SCHEDULE_EXPONENTIAL, ("gamma",)),
        ScheduleSpec("inverse_scaling", SCHEDULE_INVERSE_SCALING, ("power",)),
        ScheduleSpec("cosine", SCHEDULE_COSINE, ("total_steps", "eta_min")),
        ScheduleSpec("sample_inverse_scaling", SCHEDULE_SAMPLE_INVERSE_SCALING, ("power", "rows", "offset")),
    )
}

STEP = SPECS[SCHEDULE_STEP].index
EXPONENTIAL = SPECS[SCHEDULE_EXPONENTIAL].index
INVERSE_SCALING = SPECS[SCHEDULE_INVERSE_SCALING].index
COSINE = SPECS[SCHEDULE_COSINE].index
SAMPLE_INVERSE_SCALING = SPECS[SCHEDULE_SAMPLE_INVERSE_SCALING].index


@kernel
def scheduled_lr(kind, base_lr, step, schedule, epoch=0):
    """Learning rate of the ``step``-th optimizer step (1-based), in the network's ``epoch``
    (0-based).

    Parameters
    ----------
    kind : int
        Schedule code.
    base_lr : float
    step : int
    schedule : ndarray of float64, shape (SCHEDULE_WIDTH,)
        The schedule's parameters, laid out as its ``SPECS`` entry.
    epoch : int
    """
    return lr_at(kind, base_lr, step, epoch, schedule)


@helper
def lr_at(kind, base_lr, step, epoch, schedule):
    """``scheduled_lr``'s body (inlined into the training loop)."""
    t = step - 1
    if kind == SCHEDULE_STEP:
        # float exponents: pow(), as Python computes float ** int
        return base_lr * schedule[STEP.gamma] ** np.floor(t / schedule[STEP.step_size])
    if kind == SCHEDULE_EXPONENTIAL:
        return base_lr * schedule[EXPONENTIAL.gamma] ** float(t)
    if kind == SCHEDULE_INVERSE_SCALING:
        return base_lr / float(step) ** schedule[INVERSE_SCALING.power]
    if kind == SCHEDULE_COSINE:
        total, eta_min = schedule[COSINE.total_steps], schedule[COSINE.eta_min]
        progress = t if t < total else total
        return eta_min + (base_lr - eta_min) * 0.5 * (1.0 + np.cos(np.pi * progress / total))
    if kind == SCHEDULE_SAMPLE_INVERSE_SCALING:
        seen = schedule[SAMPLE_INVERSE_SCALING.offset] + schedule[SAMPLE_INVERSE_SCALING.rows] * float(epoch)
        return base_lr / (1.0 + seen) ** schedule[SAMPLE_INVERSE_SCALING.power]
    return base_lr
