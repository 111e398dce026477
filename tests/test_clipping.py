"""Gradient clipping in the compiled loop (``fit(..., clip_grad_norm=, clip_grad_value=)``):
both backends against a NumPy transcription of the clipped trajectory (always) and against
PyTorch's ``clip_grad_norm_`` / ``clip_grad_value_`` with ``torch.optim`` (where installed)."""

import numpy as np
import pytest
from _helpers import flat_gradient

import fastgd
from fastgd.optimizers import OPTIMIZERS_UNDER_TEST

STEPS, BATCH = 50, 20  # 5 epochs of 200 rows
CLIPS = {
    "norm": dict(clip_grad_norm=1.2),
    "value": dict(clip_grad_value=0.3),
    "both": dict(clip_grad_value=0.3, clip_grad_norm=1.0),
}
# float64 over 50 steps: the compiled loop sums in other orders (blocks, fast-math) than NumPy.
RTOL = 1e-10


def problem():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(STEPS // 5 * BATCH, 4))
    y = np.tanh(X @ rng.normal(size=(4, 3))) + 0.1 * rng.normal(size=(X.shape[0], 3))
    net = fastgd.Network(
        [4, 6, 3], activation="tanh", loss="mse", dtype="float64", random_state=5, l2=1e-3, n_threads=2
    )
    return X, y, net


def clip(g, clip_grad_norm=None, clip_grad_value=None):
    # The test's own transcription of PyTorch's two functions, applied value first.
    if clip_grad_value is not None:
        g = np.clip(g, -clip_grad_value, clip_grad_value)
    if clip_grad_norm is not None:
        coefficient = clip_grad_norm / (np.linalg.norm(g) + 1e-6)
        g = g * min(coefficient, 1.0)
    return g


def transcribed(net, X, y, optimizer, clips):
    """The clipped trajectory step by step: gradients() of each batch (checked against finite
    differences elsewhere), clipped here, then the optimizer's NumPy step."""
    ref = net.copy(backend="numpy")
    ref.set_optimizer(optimizer)
    state = ref.train_state()
    norms = []
    for step in range(1, STEPS + 1):
        start = (step - 1) % (X.shape[0] // BATCH) * BATCH
        g = flat_gradient(ref, ref.gradients(X[start : start + BATCH], y[start : start + BATCH]))
        norms.append(
            np.linalg.norm(np.clip(g, -clips.get("clip_grad_value", np.inf), clips.get("clip_grad_value", np.inf)))
        )
        g = clip(g, **clips)
        fastgd.reference.optimizer_step(
            optimizer.code, state.params, g, state.opt_state, step, optimizer.lr, optimizer.hyper_vector()
        )
    return ref.flat_parameters.copy(), np.array(norms)


@pytest.mark.parametrize("clips", list(CLIPS), ids=list(CLIPS))
@pytest.mark.parametrize("index", range(len(OPTIMIZERS_UNDER_TEST)))
def test_clipping_matches_its_transcription_in_both_backends(index, clips):
    cls, options = OPTIMIZERS_UNDER_TEST[index]
    X, y, net = problem()
    expected, norms = transcribed(net, X, y, cls(**options), CLIPS[clips])
    if "clip_grad_norm" in CLIPS[clips]:
        # The limit binds on some steps and not on others: both branches are exercised.
        assert (norms > CLIPS[clips]["clip_grad_norm"]).any() and (norms < CLIPS[clips]["clip_grad_norm"]).any(), norms
    unclipped = net.copy(backend="numpy")
    unclipped.fit(X, y, optimizer=cls(**options), epochs=5, batch_size=BATCH, shuffle=False)
    assert not np.allclose(unclipped.flat_parameters, expected, rtol=1e-6), "clipping changed nothing: a useless case"
    for backend in ("numba", "numpy"):
        trained = net.copy(backend=backend)
        trained.fit(X, y, optimizer=cls(**options), epochs=5, batch_size=BATCH, shuffle=False, **CLIPS[clips])
        np.testing.assert_allclose(trained.flat_parameters, expected, rtol=RTOL, atol=RTOL * 1e-3, err_msg=backend)


def test_clipping_is_bitwise_on_one_and_two_threads_and_with_shards():
    X, y, net = problem()
    results = []
    for threads in (1, 2):
        trained = net.copy()
        trained.n_threads = threads
        trained.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=5, batch_size=BATCH, grad_shards=2, **CLIPS["both"])
        results.append(trained.flat_parameters.copy())
    assert np.array_equal(results[0], results[1])


TORCH_OPTIMIZERS = {"SGD": "SGD", "Adagrad": "Adagrad", "RMSprop": "RMSprop", "Adam": "Adam", "AdamW": "AdamW"}


@pytest.mark.parametrize("clips", list(CLIPS), ids=list(CLIPS))
@pytest.mark.parametrize(
    "index", [i for i, (cls, _) in enumerate(OPTIMIZERS_UNDER_TEST) if cls.__name__ in TORCH_OPTIMIZERS]
)
def test_clipping_matches_pytorch(index, clips):
    torch = pytest.importorskip("torch")
    cls, options = OPTIMIZERS_UNDER_TEST[index]
    X, y, net = problem()
    model = net.to_torch()
    optimizer = getattr(torch.optim, TORCH_OPTIMIZERS[cls.__name__])(model.parameters(), **options)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for step in range(STEPS):
        start = step % (X.shape[0] // BATCH) * BATCH
        optimizer.zero_grad()
        out = model(Xt[start : start + BATCH])
        weights = [layer.weight for layer in model if isinstance(layer, torch.nn.Linear)]
        # fastgd's mse, (1/2n)·Σ‖a − y‖², plus its l2 penalty (l2/2)·ΣW² on the weights only.
        loss = 0.5 * ((out - yt[start : start + BATCH]) ** 2).sum() / BATCH + 0.5e-3 * sum(
            (W**2).sum() for W in weights
        )
        loss.backward()
        if "clip_grad_value" in CLIPS[clips]:
            torch.nn.utils.clip_grad_value_(model.parameters(), CLIPS[clips]["clip_grad_value"])
        if "clip_grad_norm" in CLIPS[clips]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIPS[clips]["clip_grad_norm"])
        optimizer.step()
    trained = net.copy()
    trained.fit(X, y, optimizer=cls(**options), epochs=5, batch_size=BATCH, shuffle=False, **CLIPS[clips])
    theirs = fastgd.from_torch(model)
    np.testing.assert_allclose(trained.flat_parameters, theirs.flat_parameters, rtol=RTOL, atol=RTOL * 1e-3)


@pytest.mark.parametrize("name", ["clip_grad_norm", "clip_grad_value"])
def test_bad_clipping_values_are_refused_before_anything_changes(name):
    X, y, net = problem()
    before = net.flat_parameters.copy()
    for bad, error in (
        (0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (True, TypeError),
        ("1", TypeError),
        (np.ones(2), TypeError),
    ):
        with pytest.raises(error, match=name):
            net.fit(X, y, epochs=1, batch_size=BATCH, **{name: bad})
    assert np.array_equal(net.flat_parameters, before) and net.epochs_trained == 0
