"""Learning-rate schedules, applied per optimizer step inside the compiled training loop.

A schedule scales the optimizer's ``lr`` as a function of the 1-based step count ``t`` of that
optimizer (which continues across ``fit`` calls, and across save/load). Both backends compute
it with the same formula (``scheduled_lr`` in the kernels and the reference).
"""

from __future__ import annotations

import numpy as np

from ._validation import as_int, as_real
from .kernels.optim import (
    SCHEDULE_CONSTANT,
    SCHEDULE_COSINE,
    SCHEDULE_EXPONENTIAL,
    SCHEDULE_INVERSE_SCALING,
    SCHEDULE_SAMPLE_INVERSE_SCALING,
    SCHEDULE_STEP,
    SCHEDULE_WIDTH,
)
from .kernels.optim import SCHEDULES as SPECS


class Schedule:
    """Base class: a code for the kernels and its parameters, laid out by the one declaration in
    ``kernels.optim.SCHEDULES`` (read by name there and here)."""

    name, code, parameter_names = SPECS[SCHEDULE_CONSTANT]

    def parameters(self) -> np.ndarray:
        """The float64 vector the kernels read: the declared parameters, by name."""
        vector = np.zeros(SCHEDULE_WIDTH, dtype=np.float64)
        for index, name in enumerate(self.parameter_names):
            vector[index] = float(getattr(self, name))
        return vector

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Constant(Schedule):
    """``lr`` at every step."""


class StepDecay(Schedule):
    """``lr · gamma^⌊(t − 1) / step_size⌋``: multiply by gamma every ``step_size`` steps."""

    name, code, parameter_names = SPECS[SCHEDULE_STEP]

    def __init__(self, step_size, gamma=0.1):
        self.step_size = as_int(step_size, "step_size", 1)
        self.gamma = as_real(gamma, "gamma", minimum=0.0)


class Exponential(Schedule):
    """``lr · gamma^(t − 1)``."""

    name, code, parameter_names = SPECS[SCHEDULE_EXPONENTIAL]

    def __init__(self, gamma):
        self.gamma = as_real(gamma, "gamma", minimum=0.0)


class InverseScaling(Schedule):
    """``lr / t^power``, t the step (scikit-learn's ``invscaling`` counts samples and changes the
    rate once an epoch: :class:`SampleInverseScaling`)."""

    name, code, parameter_names = SPECS[SCHEDULE_INVERSE_SCALING]

    def __init__(self, power=0.5):
        self.power = as_real(power, "power", minimum=0.0)


class Cosine(Schedule):
    """``eta_min + (lr − eta_min)(1 + cos(π · min(t − 1, T) / T)) / 2``, T = ``total_steps``."""

    name, code, parameter_names = SPECS[SCHEDULE_COSINE]

    def __init__(self, total_steps, eta_min=0.0):
        self.total_steps = as_int(total_steps, "total_steps", 1)
        self.eta_min = as_real(eta_min, "eta_min", minimum=0.0)


class SampleInverseScaling(Schedule):
    """``lr / (1 + offset + rows·e)^power`` through the network's epoch e (0-based), constant
    within it: scikit-learn's ``learning_rate="invscaling"``, whose rate divides ``lr`` by
    ``(1 + samples seen)^power`` at the end of each epoch. ``rows``: the training rows of an
    epoch; ``offset``: samples seen besides ``rows`` per epoch trained (0 for a fit on the same
    rows from the start; ``fastgd.sklearn`` sets it for warm starts and ``partial_fit``)."""

    name, code, parameter_names = SPECS[SCHEDULE_SAMPLE_INVERSE_SCALING]

    def __init__(self, rows, power=0.5, offset=0.0):
        self.rows = as_int(rows, "rows", 1)
        self.power = as_real(power, "power", minimum=0.0)
        self.offset = as_real(offset, "offset")


def make_schedule(schedule) -> Schedule:
    if schedule is None:
        return Constant()
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str) and schedule == "constant":
        return Constant()
    raise TypeError(
        "lr_schedule must be None, 'constant' or a fastgd.schedules.Schedule "
        f"(StepDecay, Exponential, InverseScaling, Cosine, SampleInverseScaling), got {schedule!r}"
    )
