"""Bad input: a clear ValueError/TypeError naming the problem, and the network left unchanged."""

import numpy as np
import pytest
from _helpers import assert_same_state, state_of

import fastgd
from fastgd.optimizers import SGD, Adagrad, Adam, Adamax, AdamW, Momentum, NAdam, RAdam, RMSprop

X = np.random.default_rng(0).normal(size=(8, 3))
Y = np.random.default_rng(1).uniform(size=(8, 2))


@pytest.fixture(params=["numba", "numpy"])
def trained(request):
    """A network that already has parameters and optimizer state worth protecting."""
    net = fastgd.Network([3, 4, 2], random_state=0, backend=request.param)
    net.fit(X, Y, optimizer=Adam(lr=0.01), epochs=2, batch_size=4)
    return net


nan_X = X.copy()
nan_X[2, 1] = np.nan
inf_Y = Y.copy()
inf_Y[0, 0] = np.inf

FIT_CASES = [
    # (keyword arguments for fit, exception, words the message must contain)
    (dict(X=X[:, :2]), ValueError, "X has 2 columns"),
    (dict(X=X[0]), ValueError, "X must be 2-D"),
    (dict(X=X[None]), ValueError, "X must be 2-D"),
    (dict(X=np.empty((0, 3))), ValueError, "X is empty"),
    (dict(X=nan_X), ValueError, "X contains NaN"),
    (dict(X=X.astype(complex)), TypeError, "X must hold real numbers"),
    (dict(X=X.astype(object)), TypeError, "X must hold real numbers"),
    (dict(X=np.full((8, 3), "a")), TypeError, "X must hold real numbers"),
    (dict(X=[[1, 2, 3], [1, 2]]), ValueError, "X could not be read"),
    (dict(X=None), TypeError, "X must be an array"),
    (dict(y=Y[:5]), ValueError, "y has 5 rows but X has 8"),
    (dict(y=Y[:, :1]), ValueError, "y has 1 columns"),
    (dict(y=Y[:, 0]), ValueError, "y must be 2-D"),
    (dict(y=inf_Y), ValueError, "y contains NaN or infinity"),
    (dict(y=Y.astype(str)), TypeError, "y must hold real numbers"),
    (dict(epochs=-1), ValueError, "epochs must be >= 0"),
    (dict(epochs=2.5), TypeError, "epochs must be an int"),
    (dict(epochs=True), TypeError, "epochs must be an int"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=4.0), TypeError, "batch_size must be an int or None"),
    (dict(shuffle="yes"), ValueError, "shuffle must be True, False or 'blocks'"),
    (dict(optimizer="no_such_optimizer"), ValueError, "unknown optimizer 'no_such_optimizer'"),
    (dict(optimizer=42), TypeError, "optimizer must be an Optimizer"),
    (dict(sample_weight=np.ones(7)), ValueError, "sample_weight must be 1-D with one weight per row"),
    (dict(sample_weight=-np.ones(8)), ValueError, "sample_weight must be >= 0"),
    (dict(sample_weight=np.zeros(8)), ValueError, "positive sum"),
    (dict(sample_weight=np.full(8, np.nan)), ValueError, "sample_weight contains NaN"),
]


@pytest.mark.parametrize("kwargs, error, words", FIT_CASES, ids=[c[2] for c in FIT_CASES])
def test_fit_rejects_bad_input_and_leaves_the_network_unchanged(trained, kwargs, error, words):
    before = state_of(trained)
    args = dict(X=X, y=Y, optimizer=Adam(lr=0.5), epochs=1)
    args.update(kwargs)
    with pytest.raises(error, match=words):
        trained.fit(args.pop("X"), args.pop("y"), **args)
    assert_same_state(trained, before)


@pytest.mark.parametrize("method", ["predict", "loss", "gradients"])
def test_evaluation_methods_check_their_input(trained, method):
    before = state_of(trained)
    call = getattr(trained, method)
    args = () if method == "predict" else (Y,)
    with pytest.raises(ValueError, match="X has 2 columns"):
        call(X[:, :2], *args)
    with pytest.raises(ValueError, match="X contains NaN"):
        call(nan_X, *args)
    with pytest.raises(TypeError, match="X must hold real numbers"):
        call(X.astype(complex), *args)
    if method != "predict":
        with pytest.raises(ValueError, match="y has 5 rows"):
            call(X, Y[:5])
    assert_same_state(trained, before)


def test_crossentropy_labels_are_checked():
    net = fastgd.Network([3, 4, 3], loss="crossentropy", random_state=0)
    with pytest.raises(ValueError, match="labels outside 0..2"):
        net.fit(X, np.array([0, 1, 2, 3, 0, 1, 2, 0]))
    with pytest.raises(ValueError, match="labels outside"):
        net.fit(X, -np.ones(8, dtype=int))
    with pytest.raises(ValueError, match="whole numbers"):
        net.fit(X, np.full(8, 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        net.fit(X, np.full((8, 3), 2.0))


def test_binary_crossentropy_targets_must_be_probabilities():
    net = fastgd.Network([3, 4, 2], loss="binary_crossentropy", random_state=0)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
        net.fit(X, Y + 1)


def test_integer_and_bool_inputs_are_converted():
    net = fastgd.Network([3, 4, 1], random_state=0)
    ints = np.array([[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(net.predict(ints), net.predict(ints.astype(float)))
    np.testing.assert_array_equal(net.predict(ints > 2), net.predict((ints > 2).astype(float)))


def test_float32_overflow_is_reported():
    net = fastgd.Network([3, 4, 1], dtype="float32", random_state=0)
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        net.predict(np.full((2, 3), 1e300))


NETWORK_CASES = [
    (dict(layer_sizes=[3]), ValueError, "at least an input and an output"),
    (dict(layer_sizes=[3, 0, 1]), ValueError, "layer_sizes must be >= 1"),
    (dict(layer_sizes=[3, -2, 1]), ValueError, "layer_sizes must be >= 1"),
    (dict(layer_sizes=[3, 2.5, 1]), TypeError, "layer_sizes must hold ints"),
    (dict(layer_sizes="3,4"), TypeError, "layer_sizes must be a sequence"),
    (dict(layer_sizes=[10**6, 10**6, 1]), ValueError, "parameters"),
    (dict(activation="swish"), ValueError, "unknown activation 'swish'"),
    (dict(activation="softmax"), ValueError, "only be the output_activation"),
    (dict(activation=3), TypeError, "activation must be a string"),
    (dict(output_activation="swish"), ValueError, "unknown output_activation"),
    (dict(loss="hinge"), ValueError, "unknown loss 'hinge'"),
    (dict(loss="crossentropy", output_activation="sigmoid"), ValueError, "needs output_activation='softmax'"),
    (dict(loss="binary_crossentropy", output_activation="tanh"), ValueError, "needs output_activation='sigmoid'"),
    (dict(init="orthogonal"), ValueError, "unknown init 'orthogonal'"),
    (dict(dtype="float16"), ValueError, "unknown dtype 'float16'"),
    (dict(backend="torch"), ValueError, "backend must be one of"),
    (dict(random_state="seed"), TypeError, "random_state must be"),
    (dict(random_state=-1), ValueError, "random_state must be >= 0"),
]


@pytest.mark.parametrize("kwargs, error, words", NETWORK_CASES, ids=[c[2] for c in NETWORK_CASES])
def test_network_rejects_bad_configuration(kwargs, error, words):
    args = dict(layer_sizes=[3, 4, 2])
    args.update(kwargs)
    with pytest.raises(error, match=words):
        fastgd.Network(**args)


OPTIMIZER_CASES = [
    (SGD, dict(lr=0), ValueError, "lr must be > 0"),
    (SGD, dict(lr=-0.1), ValueError, "lr must be > 0"),
    (SGD, dict(lr="0.1"), TypeError, "lr must be a real number"),
    (SGD, dict(lr=float("nan")), ValueError, "lr must be finite"),
    (SGD, dict(momentum=-0.5), ValueError, "momentum must be >= 0"),
    (SGD, dict(nesterov=True), ValueError, "nesterov=True requires momentum > 0"),
    (SGD, dict(momentum=0.9, dampening=0.1, nesterov=True), ValueError, "dampening = 0"),
    (SGD, dict(dampening=1.5), ValueError, "dampening must be in"),
    (SGD, dict(weight_decay=-1), ValueError, "weight_decay must be >= 0"),
    (SGD, dict(nesterov=1), TypeError, "nesterov must be a bool"),
    (Momentum, dict(beta=1.0), ValueError, "beta must be in"),
    (Adagrad, dict(lr_decay=-1), ValueError, "lr_decay must be >= 0"),
    (Adagrad, dict(initial_accumulator_value=-1), ValueError, "initial_accumulator_value"),
    (Adagrad, dict(eps=-1e-10), ValueError, "eps must be >= 0"),
    (RMSprop, dict(alpha=1.5), ValueError, "alpha must be in"),
    (RMSprop, dict(centered="no"), TypeError, "centered must be a bool"),
    (Adam, dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in"),
    (Adam, dict(betas=(-0.1, 0.99)), ValueError, r"betas\[0\] must be in"),
    (Adam, dict(betas=0.9), TypeError, r"betas must be a tuple of 2 \(beta1, beta2\)"),
    (Adam, dict(betas=(0.9, 0.99, 0.5)), TypeError, r"betas must be a tuple of 2"),
    (Adam, dict(eps=-1), ValueError, "eps must be >= 0"),
    (AdamW, dict(weight_decay=-0.01), ValueError, "weight_decay must be >= 0"),
    (AdamW, dict(amsgrad=None), TypeError, "amsgrad must be a bool"),
    (NAdam, dict(momentum_decay=-0.004), ValueError, "momentum_decay must be >= 0"),
    (NAdam, dict(decoupled_weight_decay=1), TypeError, "decoupled_weight_decay must be a bool"),
    (RAdam, dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in"),
    (RAdam, dict(weight_decay=-1), ValueError, "weight_decay must be >= 0"),
    (Adamax, dict(eps=-1), ValueError, "eps must be >= 0"),
    (Adamax, dict(lr=0), ValueError, "lr must be > 0"),
]


@pytest.mark.parametrize(
    "cls, kwargs, error, words", OPTIMIZER_CASES, ids=[f"{c[0].__name__}-{c[3]}" for c in OPTIMIZER_CASES]
)
def test_optimizers_reject_bad_hyper_parameters(cls, kwargs, error, words):
    with pytest.raises(error, match=words):
        cls(**kwargs)


def test_a_network_larger_than_memory_is_refused_before_allocating():
    from fastgd.network import _physical_memory

    width = 46_000  # 2.1e9 parameters, just under the 2**31 limit: 3 float64 buffers are 47 GiB
    memory = _physical_memory()
    if memory is None or memory >= 3 * 8 * (width * width + width + 1):
        pytest.skip("this machine has the memory for it")
    with pytest.raises(ValueError, match="more than this machine's"):
        fastgd.Network([width, width, 1])


# -- every argument given an array where a scalar belongs: a clear error naming it ----------------
import inspect  # noqa: E402

from fastgd import schedules as _schedules  # noqa: E402
from fastgd.training.plan import FIT_OPTIONS  # noqa: E402

_ARRAY = np.array([0, 1])


def _cases():
    net = fastgd.Network([2, 3, 1], backend="numpy", random_state=0)
    X, y = np.random.default_rng(0).random((8, 2)), np.random.default_rng(1).random((8, 1))
    for name in [*FIT_OPTIONS, "epochs", "batch_size", "shuffle"]:
        yield f"fit:{name}", name, lambda name=name: net.copy().fit(X, y, **{name: _ARRAY})
    for name in list(inspect.signature(fastgd.Network).parameters)[1:]:
        yield f"Network:{name}", name, lambda name=name: fastgd.Network([2, 3, 1], **{name: _ARRAY})
    for cls in fastgd.optimizers.OPTIMIZERS.values():
        for name in inspect.signature(cls).parameters:
            yield f"{cls.__name__}:{name}", name, lambda cls=cls, name=name: cls(**{name: _ARRAY})
    for name in inspect.signature(fastgd.callbacks.EarlyStopping).parameters:
        yield f"EarlyStopping:{name}", name, lambda name=name: fastgd.callbacks.EarlyStopping(**{name: _ARRAY})
    for cls in (
        _schedules.StepDecay,
        _schedules.Exponential,
        _schedules.InverseScaling,
        _schedules.Cosine,
        _schedules.SampleInverseScaling,
    ):
        parameters = inspect.signature(cls).parameters
        required = {n: 2 for n, p in parameters.items() if p.default is inspect.Parameter.empty}
        for name in parameters:
            yield (
                f"{cls.__name__}:{name}",
                name,
                lambda cls=cls, name=name, required=required: cls(**{**required, name: _ARRAY}),
            )
    for name in ("dtype", "backend"):
        yield f"copy:{name}", name, lambda name=name: net.copy(**{name: _ARRAY})


CASES = list(_cases())


@pytest.mark.parametrize("label, name, call", CASES, ids=[case[0] for case in CASES])
def test_an_array_where_a_scalar_belongs_is_refused_naming_the_argument(label, name, call):
    # Never NumPy's "truth value of an array is ambiguous": a message that names the argument.
    with pytest.raises((ValueError, TypeError)) as raised:
        call()
    message = str(raised.value)
    assert "ambiguous" not in message and name in message, message


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: fastgd.Network([2, 3, 1], l1=10**400), "l1"),
        (lambda: fastgd.Network([2, 3, 1], l2=-(10**400)), "l2"),
        (lambda: fastgd.SGD(lr=10**400), "lr"),
    ],
)
def test_an_integer_beyond_any_float_is_refused_naming_the_argument(make, name):
    # float() of such an int raises OverflowError; the argument checks turn it into their ValueError.
    with pytest.raises(ValueError, match=name):
        make()
