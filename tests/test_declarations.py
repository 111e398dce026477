"""One declaration per optimizer and schedule (kernels.optim.SPECS, kernels.schedules.SPECS):
the classes, the compiled updates and their NumPy twins all read it, and these tests fail when
one of them disagrees with it."""

import inspect
import re

import numpy as np
import pytest

import fastgd
from fastgd import kernels, reference, schedules
from fastgd.kernels import optim
from fastgd.kernels import schedules as kernel_schedules
from fastgd.optimizers import OPTIMIZERS, OPTIMIZERS_UNDER_TEST

def test_every_optimizer_class_has_one_declaration_and_its_attributes():
    assert sorted(OPTIMIZERS) == sorted(spec.name for spec in optim.SPECS.values())
    for spec in optim.SPECS.values():
        cls = OPTIMIZERS[spec.name]
        assert (cls.code, cls.hyper_names, cls.state_names) == (spec.code, spec.hyper, spec.state)
        instance = cls()
        vector = instance.hyper_vector()
        assert vector.shape == (len(spec.hyper),)
        for position, name in enumerate(spec.hyper):
            assert vector[position] == float(getattr(instance, name)), (spec.name, name)
        # Every constructor argument is declared (betas is Adam's pair (beta1, beta2)).
        arguments = set(inspect.signature(cls).parameters) - {"betas"}
        assert arguments <= set(spec.hyper), (spec.name, arguments - set(spec.hyper))
        assert set(spec.hyper) - {"beta1", "beta2"} <= arguments, (spec.name, set(spec.hyper) - arguments)


@pytest.mark.parametrize("spec", list(optim.SPECS.values()), ids=lambda s: s.name)
def test_compiled_update_and_twin_read_only_declared_names(spec):
    # The compiled update reads hyper[INDEX.name] with its own optimizer's index (INDEX is the
    # name in capitals, kernels.optim); a name outside the declaration would fail at import (an
    # index has only the declared attributes), but reading another optimizer's index would pass
    # silently, so check the source. The twin takes the declared names as its arguments.
    index = spec.name.upper()
    assert getattr(optim, index) == spec.index
    source = inspect.getsource(optim.UPDATES[spec.code])
    used = re.findall(r"\[(\w+)\.(\w+)\]", source)
    assert used, "the hyper-parameters are read by name"
    for index_name, name in used:
        assert index_name == index, f"{spec.name} reads {index_name}.{name}"
        assert name in spec.hyper
    twin = getattr(reference, f"{spec.name}_step")
    assert tuple(inspect.signature(twin).parameters) == ("p", "g", *spec.state, "step", *spec.hyper)
    assert set(spec.flags) <= set(spec.hyper)


@pytest.mark.parametrize("cls, options", OPTIMIZERS_UNDER_TEST, ids=str)
def test_a_declared_hyper_parameter_moves_the_update(cls, options):
    # Changing any one declared hyper-parameter (other than a flag at its default) changes what
    # the compiled update does: the kernel really reads each declared slot.
    optimizer = cls(**options)
    rng = np.random.default_rng(0)
    p, g = rng.normal(size=50), rng.normal(size=50)

    def run(vector):
        params, state = p.copy(), optimizer.initial_state(50, np.float64) + 0.5
        for step in (1, 2, 3):
            kernels.optimizer_step(optimizer.code, params, g, state, step, vector[0], vector)
        return params

    base = optimizer.hyper_vector()
    reference_run = run(base)
    for position, name in enumerate(optimizer.hyper_names):
        changed = base.copy()
        changed[position] = base[position] * 0.7 + 0.013 if base[position] not in (0.0, 1.0) else 1.0 - base[position]
        if name == "initial_accumulator_value":
            continue  # Adagrad's starting state (Optimizer.initial_state), not read by the update
        if name in ("dampening", "nesterov") and optimizer.hyper_vector()[optimizer.hyper_names.index("momentum")] == 0:
            continue  # no effect without momentum, by definition
        if name == "nesterov" and changed[position] and base[optimizer.hyper_names.index("dampening")] != 0:
            continue
        assert not np.array_equal(run(changed), reference_run), f"{cls.__name__}.{name} is not read"


def test_every_schedule_class_has_one_declaration():
    classes = {cls.name: cls for cls in vars(schedules).values() if isinstance(cls, type) and issubclass(cls, schedules.Schedule)}
    assert sorted(classes) == sorted(spec.name for spec in kernel_schedules.SPECS.values())
    examples = {"constant": {}, "step": dict(step_size=3, gamma=0.5), "exponential": dict(gamma=0.9),
                "inverse_scaling": dict(power=0.7), "cosine": dict(total_steps=9, eta_min=0.01),
                "sample_inverse_scaling": dict(rows=10, power=0.25, offset=3)}  # fmt: skip
    for spec in kernel_schedules.SPECS.values():
        cls = classes[spec.name]
        assert (cls.code, cls.parameter_names) == (spec.code, spec.parameters)
        instance = cls(**examples[spec.name])
        vector = instance.parameters()
        for position, name in enumerate(spec.parameters):
            assert vector[position] == float(getattr(instance, name))
        for step, epoch in ((1, 0), (4, 1), (11, 3)):
            assert kernels.scheduled_lr(spec.code, 0.1, step, vector, epoch) == pytest.approx(
                reference.scheduled_lr(spec.code, 0.1, step, vector, epoch), rel=1e-14
            )


def test_adding_an_optimizer_touches_the_files_the_contributor_guide_names():
    # docs/contributing/extending.rst says: kernels/optim.py (declaration and update), fastgd/reference.py (the twin),
    # fastgd/optimizers.py (class and OPTIMIZERS_UNDER_TEST); the rest is derived: the named
    # step, the kernel list, the pieces, the tests.
    import fastgd.optimizers as classes
    from fastgd.kernels import pieces

    for spec in optim.SPECS.values():
        assert hasattr(optim, f"{spec.name}_update") and hasattr(reference, f"{spec.name}_step")
        assert f"{spec.name}_step" in kernels.KERNEL_NAMES and pieces.label("update", spec.code) == f"update:{spec.name}"
        assert any(cls.name == spec.name for cls, _ in classes.OPTIMIZERS_UNDER_TEST)
    assert fastgd.optimizers is classes


def test_every_file_and_module_the_readme_names_exists():
    # A path or `python -m` module in the README that does not exist is a stale instruction.
    import importlib.util
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    paths = set(re.findall(r"(?<![\w/.])((?:benchmarks|tests|kernels|fastgd|\.ci)/[\w/.-]+\.(?:py|json|toml|md)|\.ci/run)\b", text))
    missing = sorted(path for path in paths if not (root / path).exists())
    assert not missing, f"the README names files that do not exist: {missing}"
    modules = set(re.findall(r"-m (fastgd(?:\.\w+)*)", text))
    assert modules, "the README names no `python -m fastgd...` command"
    absent = sorted(module for module in modules if importlib.util.find_spec(module) is None)
    assert not absent, f"the README names modules that do not exist: {absent}"
