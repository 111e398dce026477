"""One library training one workload, in a process of its own: ``python -m fastgd.bench.worker
LIBRARY WORKLOAD THREADS``, which prints one JSON line (WORKLOAD: a name, or one with another
activation or dtype, ``small,activation=gelu,dtype=float64``: ``workloads.resolve``). A peer
installed in another environment (``bench --peer-python jax=/path/to/python``) runs this file
with that Python and a workload written to a file (``write_standalone``): it imports neither
fastgd nor Numba. So does another installed fastgd (``bench --baseline /path/to/python``,
library ``fastgd`` on a standalone workload): this file then imports that environment's
fastgd, never this checkout's, and trains through the public API every release has. Nothing
here may import from this checkout at the top of the file (the baseline's fastgd may lack it).

Two libraries' thread pools in one process slow each other down (measured here: the NumPy
backend ran 38 ms/step on ``mid`` in a process that had also run PyTorch and Numba, against
4.2 ms alone), so ``fastgd.bench`` starts a worker per measurement.

Each worker builds the workload's network with the same initial weights (fastgd's) and the
workload's activation (PyTorch and JAX read it from fastgd's table; scikit-learn has only
identity, logistic, tanh and relu, and refuses the others by name), warms up
(compiles, or for eager libraries runs a step), then times the whole training run: best of a
few runs when a run is short. The code for each peer is what its own users would write:
PyTorch eager with ``torch.optim``; JAX with the whole run under ``jax.jit`` of ``lax.scan`` and
optax (compile time reported apart); scikit-learn's ``MLPRegressor``/``MLPClassifier``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np

LIBRARIES = ("fastgd", "fastgd-numpy", "torch", "jax", "sklearn", "fastgd-mpi", "fastgd-track")
# Which module a library needs (a peer that is missing is skipped with a note).
REQUIRES = {"torch": ("torch",), "jax": ("jax", "optax"), "sklearn": ("sklearn",)}
# A run shorter than this is repeated (best of RUNS) inside the worker.
SHORT_RUN_SECONDS = 1.0
RUNS = 3


def _timed(run, prepare=lambda: None):
    best, final = np.inf, None
    for _ in range(RUNS):
        state = prepare()
        start = time.perf_counter()
        final = run(state)
        seconds = time.perf_counter() - start
        best = min(best, seconds)
        if seconds > SHORT_RUN_SECONDS:
            break
    return best, final


def _peer_activation(workload):
    """The workload's activation as the peers name it, from fastgd's table
    (``fastgd.registry.ACTIVATIONS``): {"torch": (``torch.nn`` module, its arguments), or None
    for the identity; "sklearn": scikit-learn's name, or None where it has none}. A standalone
    workload carries them (its environment may have no fastgd)."""
    names = getattr(workload, "peer_activation", None)
    if names is None:
        from fastgd.registry import ACTIVATIONS

        spec = ACTIVATIONS[workload.activation]
        names = {"torch": spec.torch, "sklearn": spec.sklearn}
    return names


def _torch_activation(torch, workload):
    """A factory of the workload's activation as a ``torch.nn`` module."""
    module, options = _peer_activation(workload)["torch"] or ("Identity", {})
    return lambda: getattr(torch.nn, module)(**options)


def _jax_activation(jax, workload):
    """The workload's activation as a JAX function, from its PyTorch declaration (the same
    arguments: leaky_relu's slope, GELU's exact or tanh form)."""
    declaration = _peer_activation(workload)["torch"]
    if declaration is None:
        return lambda z: z
    module, options = declaration
    forms = {
        "Sigmoid": jax.nn.sigmoid,
        "Tanh": jax.numpy.tanh,
        "ReLU": jax.nn.relu,
        "Softplus": jax.nn.softplus,
        "SiLU": jax.nn.silu,
        "LeakyReLU": lambda z: jax.nn.leaky_relu(z, negative_slope=options.get("negative_slope", 0.01)),
        "GELU": lambda z: jax.nn.gelu(z, approximate=options.get("approximate", "none") == "tanh"),
    }
    if module not in forms:
        raise ValueError(f"the JAX worker has no form of activation {workload.activation!r} (torch.nn.{module})")
    return forms[module]


def _initial(workload):
    if hasattr(workload, "initial"):  # a standalone workload (another environment's peer)
        return workload.initial
    net = workload.network()
    return [np.array(W) for W in net.weights], [np.array(b) for b in net.biases]


class StandaloneWorkload:
    """A workload read from the file ``write_standalone`` wrote: its settings, data and initial
    weights, so that a peer installed in another environment (another Python, without fastgd or
    Numba) trains exactly what the others train. Has the attributes the peers' code reads."""

    def __init__(self, path):
        with np.load(path, allow_pickle=False) as stored:
            settings = json.loads(str(stored["settings"]))
            self._X, self._Y = stored["X"], stored["Y"]
            count = settings["layers"]
            self.initial = ([stored[f"W{k}"] for k in range(count)], [stored[f"b{k}"] for k in range(count)])
        self.activation = "sigmoid"  # a file without one (written before activations were carried)
        self.peer_activation = {"torch": ("Sigmoid", {}), "sklearn": "logistic"}
        for name, value in settings.items():
            setattr(self, name, tuple(value) if name == "layer_sizes" else value)
        self.batch = self.rows if self.batch_size is None else self.batch_size
        self.steps_per_epoch = -(-self.rows // self.batch)
        self.steps = self.epochs * self.steps_per_epoch

    def data(self):
        return self._X, self._Y


def write_standalone(workload, path):
    """Write ``workload`` for ``StandaloneWorkload`` (``bench --peer-python``, ``--baseline``):
    its settings, activation (with the peers' names of it), data and initial weights."""
    X, Y = workload.data()
    weights, biases = _initial(workload)
    settings = dict(
        name=workload.name,
        layer_sizes=list(workload.layer_sizes),
        dtype=workload.dtype,
        optimizer=workload.optimizer,
        lr=workload.lr,
        batch_size=workload.batch_size,
        rows=workload.rows,
        epochs=workload.epochs,
        loss=workload.loss,
        activation=workload.activation,
        peer_activation=_peer_activation(workload),
        layers=len(weights),
    )
    arrays = {f"W{k}": W for k, W in enumerate(weights)} | {f"b{k}": b for k, b in enumerate(biases)}
    np.savez(path, settings=json.dumps(settings), X=X, Y=Y, **arrays)


def runtime(library, version) -> str:
    """What a peer runs on, as the bench table names it."""
    if library == "jax":
        parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
        # JAX 0.4.32 moved XLA's CPU backend to its thunk runtime (jax-ml/jax issues 26021, 26145).
        return "XLA CPU, classic runtime" if parts < (0, 4, 32) else "XLA CPU, thunk runtime"
    return {"torch": "eager, torch.optim", "sklearn": "NumPy + BLAS", "fastgd-numpy": "NumPy + BLAS"}.get(
        library, "Numba"
    )


def _time_fastgd(fastgd, net, X, Y, workload, make_optimizer, **options):
    """Time ``net`` (a fastgd ``Network`` of any release) on the workload: a warm-up fit on one
    batch first (compiles, or loads the compile cache; its time is ``compile_seconds``), then the
    whole run on fresh copies, best of a few when short."""
    start = time.perf_counter()
    net.copy().fit(
        X[: workload.batch],
        Y[: workload.batch],
        optimizer=make_optimizer(),
        epochs=1,
        batch_size=workload.batch_size,
        shuffle=False,
        **options,
    )
    compile_seconds = time.perf_counter() - start

    def run(copy):
        return copy.fit(
            X,
            Y,
            optimizer=make_optimizer(),
            epochs=workload.epochs,
            batch_size=workload.batch_size,
            shuffle=False,
            **options,
        ).loss[-1]

    seconds, loss = _timed(run, net.copy)
    return dict(seconds=seconds, compile_seconds=compile_seconds, final_loss=float(loss), version=fastgd.__version__)


def run_fastgd(workload, threads, backend="numba", track=False):
    import fastgd

    X, Y = workload.data()
    net = workload.network(backend, n_threads=threads)
    # track: with gradient health recorded (fit(track_gradients=...), warnings off), to time its cost.
    options = dict(track_gradients=fastgd.GradientTracking(warn=False)) if track else {}
    return _time_fastgd(fastgd, net, X, Y, workload, workload.make_optimizer, **options)


def run_fastgd_standalone(workload, threads):
    """Another installed fastgd (``bench --baseline PYTHON``) on a standalone workload: the
    environment's own ``fastgd``, through the public API that every release has (``Network``,
    its ``weights`` and ``biases``, ``SGD``, ``Adam``, ``fit``), from the standalone initial
    weights, with the workload's ``activation=``; timed as ``run_fastgd``. A release whose
    ``Network`` refuses the activation (one newer than it) trains nothing: the result is
    ``{"unsupported": its error, "version", "fastgd_path"}``."""
    import os

    import fastgd

    X, Y = workload.data()
    loss = "crossentropy" if workload.loss == "crossentropy" else "mse"
    path = os.path.dirname(os.path.abspath(fastgd.__file__))
    try:
        net = fastgd.Network(
            list(workload.layer_sizes),
            activation=workload.activation,
            loss=loss,
            dtype=workload.dtype,
            random_state=0,
            n_threads=threads,
        )
    except ValueError as error:  # every release builds the workloads' sigmoid networks: the activation is what it lacks
        return {"unsupported": f"{type(error).__name__}: {error}", "version": fastgd.__version__, "fastgd_path": path}
    weights, biases = workload.initial
    for k, (W, b) in enumerate(zip(weights, biases)):
        net.weights[k][...] = W  # views into the network's parameters
        net.biases[k][...] = b
    if not all(
        np.array_equal(net.weights[k], W) and np.array_equal(net.biases[k], b)
        for k, (W, b) in enumerate(zip(weights, biases))
    ):
        raise RuntimeError(
            f"fastgd {fastgd.__version__}: the initial weights could not be set through Network.weights and .biases"
        )

    def make_optimizer():
        if workload.optimizer == "adam":
            return fastgd.Adam(lr=workload.lr)
        return fastgd.SGD(lr=workload.lr, momentum=0.9 if workload.optimizer == "momentum" else 0.0)

    result = _time_fastgd(fastgd, net, X, Y, workload, make_optimizer)
    result.update(fastgd_path=path)  # which fastgd ran: the baseline's, not this one
    return result


def run_torch(workload, threads):
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch_dtype = getattr(torch, workload.dtype)
    X, Y = workload.data()
    weights, biases = _initial(workload)
    Xt, Yt = torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.ascontiguousarray(Y))
    labels = Yt.argmax(dim=1) if workload.loss == "crossentropy" else None
    batch = workload.batch
    activation = _torch_activation(torch, workload)

    def build():
        layers = []
        for k, (W, b) in enumerate(zip(weights, biases)):
            linear = torch.nn.Linear(*W.shape, dtype=torch_dtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W.T.copy()))
                linear.bias.copy_(torch.from_numpy(b))
            layers.append(linear)
            if k < len(weights) - 1 or workload.loss != "crossentropy":
                layers.append(activation())
        model = torch.nn.Sequential(*layers)
        if workload.optimizer == "adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=workload.lr)
        else:
            optimizer = torch.optim.SGD(
                model.parameters(), lr=workload.lr, momentum=0.9 if workload.optimizer == "momentum" else 0.0
            )
        return model, optimizer

    def step(model, optimizer, start):
        xb = Xt[start : start + batch]
        optimizer.zero_grad()
        out = model(xb)
        if labels is None:
            loss = 0.5 * ((out - Yt[start : start + batch]) ** 2).sum(dim=1).mean()
        else:
            loss = torch.nn.functional.cross_entropy(out, labels[start : start + batch])
        loss.backward()
        optimizer.step()
        return loss

    warm_model, warm_optimizer = build()
    step(warm_model, warm_optimizer, 0)

    def run(built):
        model, optimizer = built
        losses = []
        for _ in range(workload.epochs):
            losses.clear()
            for start in range(0, workload.rows, batch):
                losses.append(step(model, optimizer, start).detach())
        return float(torch.stack(losses).mean())  # the last epoch's mean batch loss

    seconds, loss = _timed(run, build)
    return dict(seconds=seconds, compile_seconds=0.0, final_loss=loss, version=torch.__version__)


def run_jax(workload, threads):
    import os

    if threads:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
            f" intra_op_parallelism_threads={threads}"
        ).strip()
    import jax
    import optax

    if workload.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    X, Y = workload.data()
    weights, biases = _initial(workload)
    activation = _jax_activation(jax, workload)
    params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in zip(weights, biases)]
    steps = workload.steps_per_epoch
    Xb = jnp.asarray(X.reshape(steps, workload.batch, -1))
    Yb = jnp.asarray(Y.reshape(steps, workload.batch, -1))

    def loss_fn(p, x, y):
        a = x
        for k, (W, b) in enumerate(p):
            z = a @ W + b
            a = z if (k == len(p) - 1 and workload.loss == "crossentropy") else activation(z)
        if workload.loss == "crossentropy":
            return optax.softmax_cross_entropy(a, y).mean()
        return 0.5 * jnp.mean(jnp.sum((a - y) ** 2, axis=1))

    if workload.optimizer == "adam":
        tx = optax.adam(workload.lr)
    else:
        tx = optax.sgd(workload.lr, momentum=0.9 if workload.optimizer == "momentum" else None)

    def step(carry, xy):
        p, s = carry
        value, grads = jax.value_and_grad(loss_fn)(p, *xy)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), value

    def epoch(carry, _):
        carry, values = lax.scan(step, carry, (Xb, Yb))
        return carry, values.mean()

    def train(carry):
        return lax.scan(epoch, carry, None, length=workload.epochs)

    state = (params, tx.init(params))
    start = time.perf_counter()
    compiled = jax.jit(train).lower(state).compile()
    compile_seconds = time.perf_counter() - start

    def run(_):
        carry, losses = compiled(state)
        jax.block_until_ready(carry)
        return float(losses[-1])

    run(None)
    seconds, loss = _timed(run)
    return dict(seconds=seconds, compile_seconds=compile_seconds, final_loss=loss, version=jax.__version__)


def run_sklearn(workload, threads):
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from threadpoolctl import threadpool_limits

    activation = _peer_activation(workload)["sklearn"]
    if activation not in ("identity", "logistic", "tanh", "relu"):
        raise ValueError(
            f"scikit-learn's MLP has no activation {workload.activation!r} (it has identity, logistic, tanh and relu)"
        )
    X, Y = workload.data()
    weights, biases = _initial(workload)
    classifier = workload.loss == "crossentropy"
    target = Y.argmax(axis=1) if classifier else (Y.ravel() if Y.shape[1] == 1 else Y)
    solver = "adam" if workload.optimizer == "adam" else "sgd"

    def build():
        cls = MLPClassifier if classifier else MLPRegressor
        model = cls(
            hidden_layer_sizes=workload.layer_sizes[1:-1],
            activation=activation,
            solver=solver,
            alpha=0.0,
            batch_size=workload.batch,
            learning_rate_init=workload.lr,
            max_iter=workload.epochs,
            shuffle=False,
            tol=0.0,
            n_iter_no_change=workload.epochs + 1,
            momentum=0.9 if workload.optimizer == "momentum" else 0.0,
            nesterovs_momentum=False,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if classifier:
                model.partial_fit(X[:2], target[:2], classes=np.arange(Y.shape[1]))
            else:
                model.partial_fit(X[:2], target[:2])
        model.coefs_ = [W.astype(X.dtype) for W in weights]
        model.intercepts_ = [b.astype(X.dtype) for b in biases]
        model.set_params(warm_start=True)  # fit starts from these weights (with a fresh optimizer)
        return model

    def run(model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, target)
        return float(model.loss_)

    with threadpool_limits(limits=threads, user_api="blas"):
        seconds, loss = _timed(run, build)
    return dict(seconds=seconds, compile_seconds=0.0, final_loss=loss, version=sklearn.__version__)


def run_fastgd_ranks(workload, threads):
    """fastgd data-parallel over the ranks of ``mpiexec`` (this process is one of them), each
    with ``threads`` threads; rank 0 reports the slowest rank's time, and the cost of one
    gradient exchange measured apart (``distributed.FixedOrderSum``)."""
    from mpi4py import MPI

    import fastgd
    from fastgd.distributed import FixedOrderSum

    comm = MPI.COMM_WORLD
    X, Y = workload.data()
    net = workload.network(n_threads=threads)
    start = time.perf_counter()
    net.copy().fit(
        X[: workload.batch],
        Y[: workload.batch],
        optimizer=workload.make_optimizer(),
        epochs=1,
        batch_size=workload.batch_size,
        shuffle=False,
        comm=comm,
    )
    compile_seconds = time.perf_counter() - start

    def run(copy):
        comm.Barrier()
        loss = copy.fit(
            X,
            Y,
            optimizer=workload.make_optimizer(),
            epochs=workload.epochs,
            batch_size=workload.batch_size,
            shuffle=False,
            comm=comm,
        ).loss[-1]
        return loss

    seconds, loss = _timed(run, net.copy)
    seconds = comm.allreduce(seconds, op=MPI.MAX)
    exchange = FixedOrderSum(comm, net.dtype, net.n_params)
    gradient, scalars = np.zeros(net.n_params, dtype=net.dtype), np.zeros(8)
    for _ in range(5):
        exchange.step(gradient, scalars)
    comm.Barrier()
    start = time.perf_counter()
    for _ in range(50):
        exchange.step(gradient, scalars)
    exchange_seconds = comm.allreduce((time.perf_counter() - start) / 50, op=MPI.MAX)
    return dict(
        seconds=seconds,
        compile_seconds=compile_seconds,
        final_loss=loss,
        version=fastgd.__version__,
        ranks=comm.Get_size(),
        exchange_seconds=exchange_seconds,
        gradient_bytes=net.n_params * net.dtype.itemsize,
    )


def measure(library, workload_name, threads):
    from .workloads import resolve

    workload = resolve(workload_name)
    threads = threads or None
    if library == "fastgd":
        result = run_fastgd(workload, threads)
    elif library == "fastgd-numpy":
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads, user_api="blas"):
            result = run_fastgd(workload, threads, backend="numpy")
    elif library == "torch":
        result = run_torch(workload, threads)
    elif library == "jax":
        result = run_jax(workload, threads)
    elif library == "sklearn":
        result = run_sklearn(workload, threads)
    elif library == "fastgd-mpi":
        result = run_fastgd_ranks(workload, threads)
    elif library == "fastgd-track":
        result = run_fastgd(workload, threads, track=True)
    else:
        raise ValueError(f"unknown library {library!r}; expected one of {LIBRARIES}")
    result.update(
        library=library,
        workload=workload.name,
        activation=workload.activation,
        dtype=workload.dtype,
        us_per_step=result["seconds"] / workload.steps * 1e6,
    )
    return result


def roofline(threads):
    """Best float32 GEMM GFLOP/s now (NumPy's BLAS with ``threads`` threads)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    best = 0.0
    with threadpool_limits(limits=threads, user_api="blas"):
        for m, k, n in ((1024, 1024, 1024), (2048, 2048, 2048), (256, 784, 256)):
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            out = np.empty((m, n), dtype=np.float32)
            np.dot(a, b, out=out)
            for _ in range(3):
                start = time.perf_counter()
                np.dot(a, b, out=out)
                best = max(best, 2.0 * m * k * n / (time.perf_counter() - start) / 1e9)
    return best


def main(argv):
    library, workload_name, threads = argv[0], argv[1], int(argv[2])
    if workload_name.endswith(".npz"):
        # A peer or another fastgd (the baseline) in another environment:
        # ``python .../worker.py LIBRARY FILE.npz THREADS``.
        workload = StandaloneWorkload(workload_name)
        runs = {"jax": run_jax, "torch": run_torch, "sklearn": run_sklearn, "fastgd": run_fastgd_standalone}
        result = runs[library](workload, threads or None)
        result.update(library=library, workload=workload.name, activation=workload.activation, dtype=workload.dtype)
        if "unsupported" not in result:
            result.update(us_per_step=result["seconds"] / workload.steps * 1e6)
        print(json.dumps(result))
        return 0
    if library == "roofline":
        print(json.dumps({"gflops": roofline(threads or None)}))
        return 0
    result = measure(library, workload_name, threads)
    if library != "fastgd-mpi" or _rank() == 0:  # every rank measured; rank 0 reports
        print(json.dumps(result))
    return 0


def _rank():
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
