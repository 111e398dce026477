"""fastgd.memory: what a fit will allocate, what the machine has free, and the refusal of what
cannot fit before anything large is allocated (the scikit-learn estimators' check, and the
checks Network's constructor and fit call)."""

import os
import pickle
import tracemalloc
import warnings

import numpy as np
import pytest

import fastgd
from fastgd import memory
from fastgd.training.plan import Plan

GIB = 1 << 30
# The machine of the report (issue 31): a 24 GiB machine. Where this one has less available, its
# own figure is used: the refusals below then happen on it too.
REPORTED_MACHINE = 24 * GIB
# "Nothing large": the smallest buffer a refused fit would allocate is gigabytes; what a refusal
# may allocate (the data's checks, the message) stays far below this.
NOTHING_LARGE = 16 << 20


def _machine(monkeypatch, size=REPORTED_MACHINE):
    real = memory.available_bytes()
    monkeypatch.setattr(memory, "available_bytes", lambda: size if real is None else min(real, size))
    return size if real is None else min(real, size)


def _peak_while(function):
    """``function()``'s exception and the peak of what was allocated while it ran (tracemalloc:
    NumPy reports its buffers to it)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        with pytest.raises(memory.InsufficientMemoryError) as caught:
            function()
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return caught.value, peak


def _blobs(n=60, features=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)), np.arange(n) % 3


# ---------------------------------------------------------------------------------------------
# The scikit-learn estimators refuse before allocating.


def test_230_million_hidden_units_are_refused_having_allocated_nothing_large(monkeypatch):
    from fastgd.sklearn import MLPClassifier

    available = _machine(monkeypatch)
    X, y = _blobs()  # 3 features, 3 classes: the report's case
    clf = MLPClassifier(hidden_layer_sizes=(230_000_000,), random_state=0)
    error, peak = _peak_while(lambda: clf.fit(X, y))
    assert peak < NOTHING_LARGE, f"{peak} bytes were allocated before the refusal"
    assert isinstance(error, MemoryError) and isinstance(error, ValueError)
    message = str(error)
    assert message.startswith("hidden_layer_sizes=(230000000,)")
    assert error.argument == "hidden_layer_sizes"
    # The bytes needed (parameters alone: 1.61e9 of 8 bytes) and the bytes available, named.
    n_params = memory.parameter_count([3, 230_000_000, 3])
    assert error.needed > 8 * n_params and f"{error.needed} bytes" in message
    assert error.available == available and f"{available} bytes" in message
    assert not hasattr(clf, "network_") and not hasattr(clf, "classes_")  # nothing changed


def test_partial_fit_and_the_regressor_refuse_too(monkeypatch):
    from fastgd.sklearn import MLPClassifier, MLPRegressor

    _machine(monkeypatch)
    X, y = _blobs()
    error, peak = _peak_while(
        lambda: MLPClassifier(hidden_layer_sizes=(230_000_000,)).partial_fit(X, y, classes=[0, 1, 2])
    )
    assert peak < NOTHING_LARGE and error.argument == "hidden_layer_sizes"
    error, peak = _peak_while(
        lambda: MLPRegressor(hidden_layer_sizes=(230_000_000,), solver="lbfgs").fit(X, y.astype(float))
    )
    assert peak < NOTHING_LARGE and error.argument == "hidden_layer_sizes"


def test_a_batch_too_large_for_memory_names_batch_size(monkeypatch):
    from fastgd.sklearn import MLPRegressor

    _machine(monkeypatch, 4 * GIB)
    # 50 000 units: 2.6e5 parameters (2 MB) but a batch of 50 000 rows has activations and local
    # gradients of 50 000 x 50 000 floats each (37 GiB).
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50_000, 2)), rng.normal(size=50_000)
    error, peak = _peak_while(lambda: MLPRegressor(hidden_layer_sizes=(50_000,), batch_size=50_000).fit(X, y))
    assert error.argument == "batch_size" and str(error).startswith("batch_size=50000")
    assert peak < NOTHING_LARGE


def test_a_fitted_estimator_refused_a_larger_fit_is_unchanged(monkeypatch):
    from fastgd.sklearn import MLPClassifier

    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    before = clf.network_.flat_parameters.copy(), clf.loss_curve_
    _machine(monkeypatch)
    clf.set_params(hidden_layer_sizes=(230_000_000,))
    with pytest.raises(MemoryError, match="hidden_layer_sizes"):
        clf.fit(X, y)
    np.testing.assert_array_equal(clf.network_.flat_parameters, before[0])
    assert clf.loss_curve_ == before[1] and clf.network_.layer_sizes == (3, 8, 3)


def test_a_normal_network_is_accepted_with_this_machines_memory():
    from fastgd.sklearn import MLPClassifier

    assert memory.available_bytes() is not None  # (Linux: /proc/meminfo) the check is live here
    X, y = _blobs(n=200, features=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(100, 50), max_iter=5, random_state=0, early_stopping=True).fit(X, y)
    assert clf.n_iter_ >= 1 and clf.predict(X).shape == (200,)


@pytest.mark.parametrize(
    "solver, early_stopping, hidden, batch_size",
    [
        ("adam", False, (3000,), 200),
        ("adam", True, (3000, 500), 500),
        ("sgd", False, (4000,), "auto"),
        ("lbfgs", False, (3000,), "auto"),
    ],
)
def test_the_estimate_is_what_a_fit_allocates(monkeypatch, solver, early_stopping, hidden, batch_size):
    # The estimate against tracemalloc's peak over the fit, for networks whose buffers are tens
    # to hundreds of MB. Within 15 %: the estimate leaves out small buffers and transient
    # copies of the data (a few % here; measured 0.94-1.00 when written), and must not refuse
    # what fits by overstating it.
    from fastgd.sklearn import MLPClassifier

    estimates = []
    check = memory.check
    monkeypatch.setattr(
        memory,
        "check",
        lambda estimate, arguments, available=None: (estimates.append(estimate), check(estimate, arguments, available)),
    )
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(2000, 50)), np.arange(2000) % 3
    params = dict(
        hidden_layer_sizes=hidden,
        solver=solver,
        early_stopping=early_stopping,
        max_iter=2,
        batch_size=batch_size,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MLPClassifier(**params).fit(X[:50], y[:50])  # compiled before measuring
        estimates.clear()  # (the estimator's check comes first; Network's own may follow)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            MLPClassifier(**params).fit(X, y)
            peak = tracemalloc.get_traced_memory()[1] - start
        finally:
            tracemalloc.stop()
    assert 0.85 <= estimates[0].total / peak <= 1.15, (estimates[0].total, peak, estimates[0].describe())


# ---------------------------------------------------------------------------------------------
# The checks Network's constructor and fit call (wired there by the engine's owners).


def test_check_network_refuses_what_the_constructor_would_allocate():
    with pytest.raises(memory.InsufficientMemoryError, match=r"^layer_sizes=\[3, 230000000, 3\]") as caught:
        memory.check_network([3, 230_000_000, 3], "float64", available=8 * GIB)
    n_params = memory.parameter_count([3, 230_000_000, 3])
    # Parameters, their initial copy, a one-row optimizer state, and the largest layer drawn.
    assert caught.value.needed == 3 * 8 * n_params + 8 * 3 * 230_000_000
    memory.check_network([784, 256, 10], "float32", available=8 * GIB)  # accepted: returns
    # "more than this machine's": the words tests/test_bad_input.py looks for in the refusal.
    assert "more than this machine's" in str(caught.value)


def test_check_fit_names_the_batch_or_the_layers():
    net = fastgd.Network([20, 1000, 1], random_state=0)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(5000, 20)), rng.normal(size=(5000, 1))
    plan = Plan(net, X, y, "adam", 1, 5000, True, None, {"validation_split": 0.2, "early_stopping": True})
    memory.check_fit(net, plan, available=8 * GIB)  # fits
    with pytest.raises(memory.InsufficientMemoryError, match="^batch_size=5000") as caught:
        memory.check_fit(net, plan, available=20 << 20)
    # Adam's 3 state rows, gradients, transposed weights, the end-of-epoch snapshot (1 + 3), the
    # validation evaluation's transposed weights, the best parameters (2: early stopping restores
    # them); per row of the batch (4000: the split took 1000) activations, slopes and local
    # gradients of 1001 units and the output's pre-activation, the gathered batch (inputs,
    # target, row weight), the row order and keys; the validation rows' copies and evaluation.
    # (The network's parameters and initial copy exist already.)
    n_params, units, itemsize = memory.parameter_count([20, 1000, 1]), 1001, 8
    layers = (3 + 1 + 1 + 4 + 1 + 2) * n_params * itemsize
    batch = 4000 * (3 * units + 1) * itemsize + 4000 * (20 + 1 + 1) * itemsize
    rows = 16 * 4000
    validation = 1000 * (20 + 1 + 1) * itemsize + 1000 * (3 * units + 1) * itemsize
    assert caught.value.needed == layers + batch + rows + validation
    # The layers named when they alone (with a row of everything else) exceed what is there.
    with pytest.raises(memory.InsufficientMemoryError, match=r"^layer_sizes=\[20, 1000, 1\]"):
        memory.check_fit(net, plan, available=1 << 20)
    plan.stopping = None  # (without early stopping: no best parameters)
    with pytest.raises(memory.InsufficientMemoryError) as caught:
        memory.check_fit(net, plan, available=20 << 20)
    assert caught.value.needed == layers + batch + rows + validation - 2 * n_params * itemsize


def test_the_error_pickles_with_its_attributes():
    error = memory.InsufficientMemoryError("x", "batch_size", 10, 5, {"gradients": 10})
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.argument, copy.needed, copy.available, copy.parts, str(copy)) == (
        "batch_size",
        10,
        5,
        {"gradients": 10},
        "x",
    )
    assert isinstance(copy, MemoryError) and isinstance(copy, ValueError)


# ---------------------------------------------------------------------------------------------
# The memory available: every source, and no fallback that crashes.


def test_available_memory_is_a_plausible_figure_here():
    available = memory.available_bytes()
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert isinstance(available, int) and 0 < available <= physical


def test_meminfo_is_read_in_kilobytes(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683664 kB\nMemFree:        22042096 kB\nMemAvailable:   23860776 kB\n")
    assert memory._meminfo_available(str(meminfo)) == 23860776 * 1024
    meminfo.write_text("MemTotal:       24683664 kB\n")  # (a kernel before 3.14)
    assert memory._meminfo_available(str(meminfo)) is None


def test_a_cgroup_limit_bounds_what_is_available(tmp_path):
    root, cgroup = tmp_path / "cgroup", tmp_path / "self_cgroup"
    (root / "job").mkdir(parents=True)
    cgroup.write_text("0::/job\n")
    (root / "job" / "memory.max").write_text(f"{GIB}\n")
    (root / "job" / "memory.current").write_text(f"{512 << 20}\n")
    (root / "job" / "memory.stat").write_text(f"anon 1000\ninactive_file {128 << 20}\n")
    # 1 GiB limit, 512 MiB used of which 128 MiB of page cache the kernel can drop.
    assert memory._cgroup_available(str(root), str(cgroup)) == GIB - (512 << 20) + (128 << 20)
    (root / "job" / "memory.max").write_text("max\n")  # no limit there
    assert memory._cgroup_available(str(root), str(cgroup)) is None
    # A parent's limit counts, less the parent's usage (its children's and its own). (The
    # folders with limit files are looked up once per process: this one is new.)
    (root / "memory.max").write_text(f"{2 * GIB}\n")
    (root / "memory.current").write_text(f"{600 << 20}\n")
    memory._cgroup_folders.cache_clear()
    assert memory._cgroup_available(str(root), str(cgroup)) == 2 * GIB - (600 << 20)
    assert memory._cgroup_available(str(tmp_path / "absent"), str(tmp_path / "absent_too")) is None
    # cgroup v1: memory/memory.limit_in_bytes, "unlimited" read as a huge number.
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{GIB}\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text(f"{256 << 20}\n")
    (v1 / "memory" / "memory.stat").write_text(f"cache 5\ntotal_inactive_file {64 << 20}\n")
    assert memory._cgroup_available(str(v1), str(tmp_path / "absent")) == GIB - (256 << 20) + (64 << 20)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory._cgroup_available(str(v1), str(tmp_path / "absent")) is None


def test_every_source_failing_leaves_nothing_known_and_nothing_refused(monkeypatch):
    def broken(*args):
        raise OSError("no such thing here")

    for name in (
        "_meminfo_available",
        "_sysconf_available",
        "_windows_available",
        "_physical_bytes",
        "_cgroup_available",
    ):
        monkeypatch.setattr(memory, name, broken)
    assert memory.available_bytes() is None
    memory.check(
        memory.network_estimate([3, 230_000_000, 3], "float64"), {"layers": ("layer_sizes", None)}
    )  # no refusal


def test_sources_are_tried_in_order_and_garbage_is_ignored(monkeypatch):
    monkeypatch.setattr(memory, "_meminfo_available", lambda: None)
    monkeypatch.setattr(memory, "_sysconf_available", lambda: "not a number")
    monkeypatch.setattr(memory, "_windows_available", lambda: 7 * GIB)
    monkeypatch.setattr(memory, "_physical_bytes", lambda: 64 * GIB)
    monkeypatch.setattr(memory, "_cgroup_available", lambda: None)
    assert memory.available_bytes() == 7 * GIB
    monkeypatch.setattr(memory, "_cgroup_available", lambda: 3 * GIB)
    assert memory.available_bytes() == 3 * GIB
    monkeypatch.setattr(memory, "_windows_available", lambda: -5)
    assert memory.available_bytes() == 3 * GIB  # (physical 64 GiB, bounded by the cgroup)


def test_the_real_sources_do_not_crash_on_any_platform(monkeypatch):
    # Each source where its platform is not: sysconf names that do not exist, Windows' call
    # without ctypes.windll, a missing /proc: None, never an exception.
    monkeypatch.setattr(memory.sys, "platform", "win32")
    assert memory._answer(memory._windows_available) is None  # (no ctypes.windll on Linux)
    monkeypatch.setattr(memory.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(f"unrecognized {name}")))
    assert memory._answer(memory._sysconf_available) is None and memory._answer(memory._physical_bytes) is None
    assert memory._answer(lambda: memory._meminfo_available("/nonexistent/meminfo")) is None


# ---------------------------------------------------------------------------------------------
# Network's constructor and fit, once they call fastgd.memory (the engine's owners wire the two
# calls: fastgd/network.py and fastgd/training/driver.py import it then).

import fastgd.network  # noqa: E402
import fastgd.training.driver  # noqa: E402

_constructor_wired = pytest.mark.skipif(
    not hasattr(fastgd.network, "memory"), reason="Network() does not call fastgd.memory yet"
)
_fit_wired = pytest.mark.skipif(
    not hasattr(fastgd.training.driver, "memory"), reason="fit() does not call fastgd.memory yet"
)


@_constructor_wired
def test_the_network_constructor_refuses_before_allocating(monkeypatch):
    _machine(monkeypatch)
    error, peak = _peak_while(lambda: fastgd.Network([3, 230_000_000, 3], random_state=0))
    assert peak < NOTHING_LARGE and error.argument == "layer_sizes"
    assert str(error).startswith("layer_sizes=[3, 230000000, 3]")


@_fit_wired
def test_fit_refuses_a_batch_too_large_and_changes_nothing(monkeypatch):
    net = fastgd.Network([2, 50_000, 1], random_state=0)
    before = net.flat_parameters.copy()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50_000, 2)), rng.normal(size=(50_000, 1))
    _machine(monkeypatch, 4 * GIB)
    error, peak = _peak_while(lambda: net.fit(X, y, optimizer="adam", batch_size=50_000))
    assert error.argument == "batch_size" and peak < NOTHING_LARGE
    np.testing.assert_array_equal(net.flat_parameters, before)
    assert net.epochs_trained == 0 and net.optimizer is None
