"""Saving and loading networks: one ``.npz`` file, no pickles.

The file holds the flat parameter buffer, the parameters the network was initialised with, the
optimizer state and step count, the training history, and a JSON description (architecture,
dtype, optimizer and its hyper-parameters, shuffle seed, epochs trained, format version). A
loaded network predicts identically and, trained further, follows the same trajectory bitwise as
the network that was saved would have.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from .network import History, Network
from .optimizers import OPTIMIZERS

FORMAT = "fastgd-network"
FORMAT_VERSION = 1
_ARRAYS = ("parameters", "initial_parameters", "optimizer_state", "optimizer_step", "description")


def save(net: Network, path) -> None:
    """Write ``net`` to ``path`` (a ``.npz`` file), atomically.

    The file is written next to its destination under a temporary name, flushed to disk, then
    renamed over ``path`` and the folder synced, so a crash mid-write leaves the previous file
    intact, never a torn one.
    """
    if not isinstance(net, Network):
        raise TypeError(f"net must be a fastgd.Network, got {type(net).__name__}")
    path = os.fspath(path)
    optimizer = net.optimizer
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layer_sizes": list(net.layer_sizes),
        "activation": net.activation,
        "output_activation": net.output_activation,
        "loss": net.loss_name,
        "init": net.init,
        "dtype": net.dtype.name,
        "backend": net.backend,
        "n_threads": net.n_threads,
        "l1": net.l1,
        "l2": net.l2,
        "shuffle_seed": net._shuffle_seed,
        "epochs_trained": net.epochs_trained,
        "optimizer": None if optimizer is None else {"name": optimizer.name, "config": _jsonable(optimizer.get_config())},
        "history": {field: list(getattr(net.history, field)) for field in History.FIELDS},
    }
    arrays = {
        "parameters": net._params,
        "initial_parameters": net._initial_params,
        "optimizer_state": net._opt_state,
        "optimizer_step": net._step,
        "description": np.frombuffer(json.dumps(description).encode("utf-8"), dtype=np.uint8),
    }
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".fastgd-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_folder(directory)


def _fsync_folder(directory) -> None:
    # The rename is durable only once the folder's entry is on disk (POSIX; Windows has no
    # folder handles to sync).
    if os.name != "posix":
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _jsonable(config):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def load(path, backend=None) -> Network:
    """Read a network written by :func:`save` (``allow_pickle=False``).

    Parameters
    ----------
    path : str or path-like
    backend : {"numba", "numpy"}, optional
        Engine for the loaded network; default: the one it was saved with.

    Raises
    ------
    ValueError
        If the file is not a fastgd network file, is truncated or corrupt, has another format
        version, or its arrays do not match its description.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in _ARRAYS if key not in data.files]
            if missing:
                raise ValueError(f"{path} is not a fastgd network file: missing {missing}")
            arrays = {key: data[key] for key in _ARRAYS}
    except FileNotFoundError:
        raise
    except ValueError as exc:
        if "is not a fastgd network file" in str(exc):
            raise
        raise ValueError(f"{path} is truncated or corrupt: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path} is truncated or corrupt: {exc}") from None
    try:
        description = json.loads(arrays["description"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} has an unreadable description: {exc}") from None
    if description.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastgd network file")
    if description.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {description.get('format_version')}; this fastgd reads version {FORMAT_VERSION}"
        )
    net = Network(
        description["layer_sizes"],
        activation=description["activation"],
        output_activation=description["output_activation"],
        loss=description["loss"],
        init=description["init"],
        dtype=description["dtype"],
        random_state=0,
        backend=backend or description["backend"],
        n_threads=description["n_threads"],
        l1=description.get("l1", 0.0),
        l2=description.get("l2", 0.0),
    )
    for key in ("parameters", "initial_parameters"):
        if arrays[key].shape != net._params.shape or arrays[key].dtype != net.dtype:
            raise ValueError(f"{path}: {key} has shape {arrays[key].shape} {arrays[key].dtype}, expected {net._params.shape} {net.dtype}")
    net._params[...] = arrays["parameters"]
    net._initial_params = arrays["initial_parameters"].copy()
    net._shuffle_seed = int(description["shuffle_seed"])
    net.epochs_trained = int(description["epochs_trained"])
    if description["optimizer"] is not None:
        spec = description["optimizer"]
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()}
        optimizer = OPTIMIZERS[spec["name"]](**config)
        state = arrays["optimizer_state"]
        if state.shape != optimizer.initial_state(net.n_params, net.dtype).shape or state.dtype != net.dtype:
            raise ValueError(f"{path}: optimizer_state has shape {state.shape}, which does not fit {optimizer!r}")
        net.optimizer = optimizer
        net._opt_state = state.copy()
        net._step[...] = arrays["optimizer_step"]
    net.history = History()
    for field in History.FIELDS:
        getattr(net.history, field).extend(description["history"][field])
    return net
