"""One declaration per optimizer and schedule (kernels.optim.SPECS, kernels.optim.SCHEDULES):
the classes, the compiled update and its NumPy twin all read it, and these tests fail when one
of them disagrees with it."""

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastgd
from fastgd import kernels, reference, schedules
from fastgd.kernels import optim
from fastgd.optimizers import OPTIMIZERS, OPTIMIZERS_UNDER_TEST


def test_every_optimizer_class_has_one_declaration_and_its_attributes():
    assert sorted(OPTIMIZERS) == sorted(spec.name for spec in optim.SPECS.values())
    for spec in optim.SPECS.values():
        cls = OPTIMIZERS[spec.name]
        assert cls.spec is spec
        assert (cls.code, cls.hyper_names, cls.state_names) == (spec.code, spec.hyper_names, spec.state)
        instance = cls()
        vector = instance.hyper_vector()
        assert vector.shape == (len(spec.hyper),)
        for position, hyper in enumerate(spec.hyper):
            assert vector[position] == float(getattr(instance, hyper.name)) == float(hyper.default), (
                spec.name,
                hyper.name,
            )
        # Every constructor argument is declared: a hyper-parameter of its own, or a group of
        # them (PyTorch's betas, the pair (beta1, beta2)), with the declared defaults.
        groups = {hyper.group for hyper in spec.hyper if hyper.group is not None}
        arguments = inspect.signature(cls).parameters
        assert set(arguments) == {hyper.name for hyper in spec.hyper if hyper.group is None} | groups, spec.name
        for group in groups:
            members = tuple(hyper for hyper in spec.hyper if hyper.group == group)
            assert arguments[group].default == tuple(hyper.default for hyper in members)
            assert getattr(instance, group) == tuple(getattr(instance, hyper.name) for hyper in members)
        # The state: one row per declared buffer, each at its declared start.
        state = instance.initial_state(4, np.float64)
        assert state.shape == (max(len(spec.state), 1), 4)
        for row, start in enumerate(spec.initial):
            assert np.all(state[row] == (getattr(instance, start) if isinstance(start, str) else start)), (
                spec.name,
                row,
            )
        assert set(spec.flags) <= set(spec.hyper_names)


@pytest.mark.parametrize("spec", list(optim.SPECS.values()), ids=lambda s: s.name)
def test_the_rule_takes_the_declared_names_and_the_update_has_its_branch(spec):
    # coefficients(t, step, <hyper-parameters by their declared names, lr first>) and rule(p, g,
    # <state buffers by their declared names>, c): a function whose arguments disagree with the
    # declaration would read another slot than the one the class fills.
    assert tuple(inspect.signature(spec.coefficients).parameters) == ("t", "step", *spec.hyper_names)
    # (the rule's own names for its state may differ: Adagrad's "sum" is state_sum there)
    rule = tuple(inspect.signature(spec.rule).parameters)
    assert len(rule) == 3 + len(spec.state) and rule[:2] == ("p", "g") and rule[-1] == "c", rule
    # The compiled update is written out from the table: one branch per declaration, calling its
    # own two functions with every declared hyper-parameter and state row.
    source = optim._update(*[None] * 9).__source__
    branch = source[source.index(f"elif code == {spec.code}:") :].split("elif code", 2)[1]
    assert f"coefficients_{spec.code}(t, step, lr" in branch and f"rule_{spec.code}(" in branch
    assert re.findall(r"hyper\[(\d+)\]", branch) == [str(i) for i in range(1, len(spec.hyper))]
    assert branch.count("row") == 2 * len(spec.state)
    # The NumPy twin runs the same declaration (kernels.optim.step): no twin of its own.
    assert not hasattr(reference, f"{spec.name}_step") and not hasattr(kernels, f"{spec.name}_step")


@pytest.mark.parametrize("cls, options", OPTIMIZERS_UNDER_TEST, ids=str)
def test_a_declared_hyper_parameter_moves_the_update(cls, options):
    # Changing any one declared hyper-parameter (other than a flag at its default) changes what
    # the compiled update does (the parameters or the state: RAdam's first steps are not
    # rectified, so beta2 reaches only its second moment then): the kernel reads each slot.
    optimizer = cls(**options)
    rng = np.random.default_rng(0)
    p, g = rng.normal(size=50), rng.normal(size=50)

    def run(vector):
        params, state = p.copy(), optimizer.initial_state(50, np.float64) + 0.5
        for step in range(1, 9):  # (RAdam's rectification, where eps is read, starts at step 6)
            kernels.optimizer_step(optimizer.code, params, g, state, step, vector[0], vector)
        return np.concatenate([params, state.ravel()])

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
        if name == "decoupled_weight_decay" and base[optimizer.hyper_names.index("weight_decay")] == 0:
            continue  # no effect without weight decay, by definition
        assert not np.array_equal(run(changed), reference_run), f"{cls.__name__}.{name} is not read"


def test_every_schedule_class_has_one_declaration():
    classes = {
        cls.name: cls
        for cls in vars(schedules).values()
        if isinstance(cls, type) and issubclass(cls, schedules.Schedule)
    }
    assert sorted(classes) == sorted(spec.name for spec in optim.SCHEDULES.values())
    # (a table, one entry a line: the formatter would break its entries apart)
    # fmt: off
    examples = {"constant": {}, "step": dict(step_size=3, gamma=0.5), "exponential": dict(gamma=0.9),
                "inverse_scaling": dict(power=0.7), "cosine": dict(total_steps=9, eta_min=0.01),
                "sample_inverse_scaling": dict(rows=10, power=0.25, offset=3)}
    # fmt: on
    for spec in optim.SCHEDULES.values():
        cls = classes[spec.name]
        assert (cls.code, cls.parameter_names) == (spec.code, spec.parameters)
        instance = cls(**examples[spec.name])
        vector = instance.parameters()
        assert vector.shape == (optim.SCHEDULE_WIDTH,)
        for position, name in enumerate(spec.parameters):
            assert vector[position] == float(getattr(instance, name))
        for step, epoch in ((1, 0), (4, 1), (11, 3)):
            assert kernels.scheduled_lr(spec.code, 0.1, step, vector, epoch) == pytest.approx(
                reference.scheduled_lr(spec.code, 0.1, step, vector, epoch), rel=1e-14
            )


def test_adding_an_optimizer_touches_the_files_the_contributor_guide_names():
    # kernels/optim.py says: its two functions and one SPECS entry there, and its class in
    # fastgd/optimizers.py (and rows in OPTIMIZERS_UNDER_TEST); the rest is derived: the compiled
    # update's branch, the NumPy twin (reference.optimizer_step runs the declared rule), the
    # public kernel, the tests. No per-optimizer kernel or twin is written.
    import fastgd.optimizers as classes

    for spec in optim.SPECS.values():
        cls = classes.OPTIMIZERS[spec.name]
        assert getattr(classes, cls.__name__) is cls and getattr(fastgd, cls.__name__) is cls
        assert any(tested is cls for tested, _ in classes.OPTIMIZERS_UNDER_TEST)
    assert "optimizer_step" in kernels.KERNEL_NAMES
    assert [name for name in kernels.KERNEL_NAMES if name.endswith("_step")] == ["optimizer_step"]
    assert fastgd.optimizers is classes


NEW_OPTIMIZER = textwrap.dedent("""
    import json
    import numpy as np
    from fastgd.kernels import optim
    from fastgd.kernels.jit import subroutine

    # signum (sign of a momentum): b <- beta*b + (1 - beta)*g; p <- p - lr*sign(b). Its two
    # functions and one table entry; nothing else is edited.
    @subroutine
    def signum_coefficients(t, step, lr, beta):
        return t(lr), t(beta), t(1.0 - beta)

    @subroutine
    def signum_rule(p, g, momentum_buffer, c):
        lr, beta, one_minus_beta = c
        b = beta * momentum_buffer + one_minus_beta * g
        return p - lr * np.sign(b), b

    code = max(optim.SPECS) + 1
    optim.SPECS[code] = optim.OptimizerSpec(
        "signum", code, (optim.Hyper("lr", 0.01, "positive"), optim.Hyper("beta", 0.9, "unit")), ("momentum_buffer",),
        (0.0,),
        signum_coefficients, signum_rule, "Signum.", "b <- beta b + (1 - beta) g; p <- p - lr sign(b)", None)

    import fastgd
    from fastgd import kernels, reference
    from fastgd.optimizers import optimizer_class
    Signum = optimizer_class(code, "Signum")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)), rng.normal(size=(64, 2))
    results = {}
    for backend in ("numba", "numpy"):
        net = fastgd.Network([3, 6, 2], activation="tanh", output_activation="identity", loss="mse", dtype="float64",
                             backend=backend, random_state=0)
        before = net.flat_parameters.copy()
        net.fit(X, y, epochs=3, batch_size=16, optimizer=Signum(lr=0.01, beta=0.8))
        results[backend] = net.predict(X)
    moved = float(np.max(np.abs(net.flat_parameters - before)))
    p, g = rng.normal(size=50), rng.normal(size=50)
    optimizer = Signum(lr=0.1)
    fast_p, fast_state = p.copy(), optimizer.initial_state(50, np.float64)
    twin_p, twin_state = p.copy(), optimizer.initial_state(50, np.float64)
    for step in (1, 2, 3):
        kernels.optimizer_step(code, fast_p, g, fast_state, step, 0.1, optimizer.hyper_vector())
        reference.optimizer_step(code, twin_p, g, twin_state, step, 0.1, optimizer.hyper_vector())
    print(json.dumps({"difference": float(np.max(np.abs(results["numba"] - results["numpy"]))),
                      "scale": float(np.max(np.abs(results["numpy"]))), "moved": moved,
                      "step": float(np.max(np.abs(fast_p - twin_p))),
                      "by_hand": float(np.max(np.abs(twin_p - (p - 3 * 0.1 * np.sign(g))))),
                      "arguments": list(Signum().get_config())}))
""")


def test_a_new_optimizer_is_one_table_entry_and_its_two_functions(tmp_path):
    # In a process of its own (the table is extended there) with a cache of its own (Numba's
    # cache keys code by its file, which the new entry does not change): the new optimizer
    # trains compiled, agrees with the NumPy twin and gets its public class, with no other file
    # touched.
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FASTGD_COMPILE_HELPER="0")
    done = subprocess.run(
        [sys.executable, "-c", NEW_OPTIMIZER], capture_output=True, text=True, env=environment, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["difference"] <= 1e-12 * found["scale"], found
    assert found["moved"] > 1e-3, found
    # three steps of ±0.1 (the same g each time: sign(b) = sign(g)): compiled and twin alike
    assert found["step"] == 0.0 and found["by_hand"] < 1e-15, found
    assert found["arguments"] == ["lr", "beta"], found


def test_every_file_and_module_the_readme_names_exists():
    # A path or `python -m` module in the README that does not exist is a stale instruction.
    import importlib.util
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    paths = set(
        re.findall(
            r"(?<![\w/.])((?:benchmarks|tests|kernels|fastgd|\.ci)/[\w/.-]+\.(?:py|json|toml|md)|\.ci/run)\b", text
        )
    )
    missing = sorted(path for path in paths if not (root / path).exists())
    assert not missing, f"the README names files that do not exist: {missing}"
    modules = set(re.findall(r"-m (fastgd(?:\.\w+)*)", text))
    assert modules, "the README names no `python -m fastgd...` command"
    absent = sorted(module for module in modules if importlib.util.find_spec(module) is None)
    assert not absent, f"the README names modules that do not exist: {absent}"
