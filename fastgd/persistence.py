"""The network file format: one ``.npz`` (a zip of ``.npy`` arrays), no pickles.

``write(path, config, state)`` stores a network's constructor arguments (``Network.get_config``)
and its ``state_dict``; ``read(path)`` returns them, checked. The file holds the arrays
``parameters``, ``initial_parameters``, ``optimizer_state``, ``optimizer_step`` and
``description``: UTF-8 JSON with the format name and version, the configuration, the optimizer
and its hyper-parameters, the shuffle seed, the epochs trained, the history and, in checkpoints,
``training``: ``{"ranks": processes that trained it}`` (optional).

Reading checks everything before allocating or building anything: the zip's members, every
array's header (dtype and shape, against the description and the member's size, so a header
claiming petabytes is refused rather than allocated), and every field of the description (type,
range). Any damage is a ``ValueError`` naming the field and the file.

This module knows the format only; ``fastgd.network.load`` turns what it reads into a network.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
import zipfile
import zlib

import numpy as np

FORMAT = "fastgd-network"
FORMAT_VERSION = 1
ARRAYS = ("parameters", "initial_parameters", "optimizer_state", "optimizer_step", "description")
# A description is a few kilobytes plus the history (three floats an epoch); anything far larger
# is not a fastgd file.
_MAX_DESCRIPTION_BYTES = 1 << 28
_CONFIG_KEYS = (
    "layer_sizes",
    "activation",
    "output_activation",
    "loss",
    "init",
    "dtype",
    "backend",
    "n_threads",
    "l1",
    "l2",
    "penalty_per_sample",
    "dropout",
    "loss_options",
)


def write(path, config: dict, state: dict, training: dict | None = None) -> None:
    """Write a network's ``config`` and ``state`` to ``path``, atomically; ``training``
    (checkpoints: ``{"ranks": processes that trained it}``) is recorded beside them.

    The file is written next to its destination under a temporary name, flushed to disk, then
    renamed over ``path`` and the folder synced, so a crash mid-write leaves the previous file
    intact, never a torn one.
    """
    path = os.fspath(path)
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise TypeError(
            f"config and state must be dicts (Network.get_config(), Network.state_dict()), got "
            f"{type(config).__name__} and {type(state).__name__}"
        )
    optimizer = state["optimizer"]
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **{key: config[key] for key in _CONFIG_KEYS},
        "shuffle_seed": state["shuffle_seed"],
        "epochs_trained": state["epochs_trained"],
        "optimizer": None
        if optimizer is None
        else {"name": optimizer["name"], "config": _jsonable(optimizer["config"])},
        "history": state["history"],
    }
    if training is not None:
        description["training"] = {"ranks": int(training["ranks"])}
    arrays = {
        "parameters": state["parameters"],
        "initial_parameters": state["initial_parameters"],
        "optimizer_state": state["optimizer_state"],
        "optimizer_step": np.array([state["optimizer_step"]], dtype=np.int64),
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


class _Damaged(ValueError):
    pass


def _finite(value) -> bool:
    # A JSON number may be an int of any size (beyond any float: not finite as a weight penalty).
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _fail(path, message):
    raise _Damaged(f"{path}: {message}")


def read(path):
    """``(config, state)`` from a file written by ``write``, every field and array checked.

    ``config`` holds ``Network``'s constructor arguments; ``state`` is a ``state_dict`` (still to
    be checked against the network by ``Network.load_state_dict``). A file saved with more
    threads than this machine has loads: threads are a property of the machine.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ValueError(f"{path} is truncated or corrupt (not a readable zip: {error})") from None
    try:
        with archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            missing = [key for key in ARRAYS if key not in members]
            if missing:
                _fail(path, f"not a fastgd network file: missing {missing}")
            raw = _read_array(
                archive, members["description"], path, "description", np.uint8, None, _MAX_DESCRIPTION_BYTES
            )
            description = _description(raw, path)
            n_params = _parameter_count(description["layer_sizes"])
            dtype = np.dtype(description["dtype"])
            slots = description["_slots"]
            arrays = {
                "parameters": _read_array(archive, members["parameters"], path, "parameters", dtype, (n_params,)),
                "initial_parameters": _read_array(
                    archive, members["initial_parameters"], path, "initial_parameters", dtype, (n_params,)
                ),
                "optimizer_state": _read_array(
                    archive, members["optimizer_state"], path, "optimizer_state", dtype, (slots, n_params)
                ),
                "optimizer_step": _read_array(
                    archive, members["optimizer_step"], path, "optimizer_step", np.int64, (1,)
                ),
            }
    except _Damaged:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path} is truncated or corrupt: {error}") from None
    step = arrays["optimizer_step"].reshape(-1)
    if step.size != 1:
        _fail(path, f"optimizer_step must hold one integer, got {step.size}")
    if not 0 <= int(step[0]) < 2**62:
        _fail(path, f"optimizer_step must be in [0, 2**62), got {int(step[0])}")
    config = {key: description[key] for key in _CONFIG_KEYS}
    state = {
        "parameters": arrays["parameters"],
        "initial_parameters": arrays["initial_parameters"],
        "optimizer": description["optimizer"],
        "optimizer_state": arrays["optimizer_state"],
        "optimizer_step": int(step[0]),
        "shuffle_seed": description["shuffle_seed"],
        "epochs_trained": description["epochs_trained"],
        "history": description["history"],
        "training": description.get("training"),
    }
    return config, state


def _read_array(archive, member, path, field, dtype, shape, max_bytes=None):
    # Read one .npy member after checking its header (dtype, shape, and that the member holds
    # the bytes the header promises) without allocating anything first.
    try:
        return _read_checked_array(archive, member, path, field, dtype, shape, max_bytes)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:  # a failed CRC, a broken stream
        _fail(path, f"{field} is corrupt ({error})")


def _read_checked_array(archive, member, path, field, dtype, shape, max_bytes):
    info = archive.getinfo(member)
    with archive.open(member) as file:
        try:
            version = np.lib.format.read_magic(file)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(
                version
            )
            if reader is None:
                raise ValueError(f"unknown .npy format version {version}")
            header = reader(file, max_header_size=10_000)
        except (zipfile.BadZipFile, zlib.error, EOFError):
            raise
        except Exception as error:  # numpy raises ValueError for damaged headers, others for junk
            _fail(path, f"{field} is corrupt: a damaged array header ({error})")
        array_shape, fortran, array_dtype = header
        if array_dtype != np.dtype(dtype) or array_dtype.hasobject:
            _fail(path, f"array '{field}' has dtype {array_dtype}, expected {np.dtype(dtype)}")
        if fortran:
            _fail(path, f"array '{field}' is stored in Fortran order; fastgd writes C order")
        if shape is not None and tuple(array_shape) != tuple(shape):
            _fail(
                path,
                f"{field} has shape {tuple(array_shape)}, expected {tuple(shape)} from the description "
                f"(layer_sizes, optimizer)",
            )
        count = int(np.prod(array_shape, dtype=np.float64)) if array_shape else 1
        needed = count * array_dtype.itemsize
        if (max_bytes is not None and needed > max_bytes) or needed > info.file_size:
            _fail(path, f"array '{field}' claims {needed} bytes; the file holds {info.file_size} for it")
        data = file.read(needed)
        if len(data) != needed:
            _fail(path, f"array '{field}' is truncated")
    return np.frombuffer(data, dtype=array_dtype).reshape(array_shape).copy()


def _parameter_count(sizes) -> int:
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def _description(raw, path) -> dict:
    from .optimizers import OPTIMIZERS

    try:
        description = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        _fail(path, f"unreadable description (not UTF-8 JSON: {error})")
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        _fail(path, "not a fastgd network file (no fastgd description)")
    if description.get("format_version") != FORMAT_VERSION:
        _fail(path, f"format version {description.get('format_version')!r}; this fastgd reads version {FORMAT_VERSION}")

    def field(name, kind, check=None, what=""):
        if name not in description:
            _fail(path, f"the description has no '{name}'")
        value = description[name]
        if not isinstance(value, kind) or (
            isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
        ):
            _fail(path, f"field '{name}' must be {what or kind}, got {value!r}")
        if check is not None and not check(value):
            _fail(path, f"field '{name}' must be {what}, got {value!r}")
        return value

    def integer(value):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    sizes = field(
        "layer_sizes",
        list,
        lambda v: len(v) >= 2 and all(integer(s) and 1 <= s <= 2**31 for s in v),
        "a list of at least two ints in [1, 2**31]",
    )
    if _parameter_count(sizes) > 2**31:
        _fail(path, f"field 'layer_sizes' {sizes} needs more than 2**31 parameters")
    for name in ("activation", "output_activation", "loss", "init", "backend"):
        field(name, str, what="a string")
    field("dtype", str, lambda v: v in ("float32", "float64"), "'float32' or 'float64'")
    if "n_threads" not in description:
        _fail(path, "the description has no 'n_threads'")
    threads = description["n_threads"]
    if threads is not None and not (integer(threads) and threads >= 1):
        _fail(path, f"field 'n_threads' must be null or an int >= 1, got {threads!r}")
    for name in ("l1", "l2"):
        value = field(
            name, (int, float), lambda v: not isinstance(v, bool) and _finite(v) and v >= 0, "a finite number >= 0"
        )
        description[name] = float(value)
    # (files written before penalty_per_sample existed have none: the penalty as it is)
    description.setdefault("penalty_per_sample", False)
    field("penalty_per_sample", bool, what="true or false")
    # (files written before dropout existed have none: no dropout)
    description.setdefault("dropout", [0.0] * (len(sizes) - 2))
    field(
        "dropout",
        list,
        lambda v: (
            len(v) == len(sizes) - 2
            and all(not isinstance(r, bool) and isinstance(r, (int, float)) and 0 <= r < 1 for r in v)
        ),
        f"a list of {len(sizes) - 2} rates in [0, 1) (one per hidden layer of layer_sizes {sizes})",
    )
    # (files written before loss_options existed have none: the loss's declared defaults; the
    # Network checks the names and values against the loss)
    description.setdefault("loss_options", {})
    field(
        "loss_options",
        dict,
        lambda v: all(
            isinstance(k, str) and not isinstance(x, bool) and isinstance(x, (int, float)) for k, x in v.items()
        ),
        "an object of numbers",
    )
    field("shuffle_seed", int, lambda v: integer(v) and 0 <= v < 2**63, "an int in [0, 2**63)")
    field("epochs_trained", int, lambda v: integer(v) and v >= 0, "an int >= 0")
    history = field("history", dict, what="an object of lists")
    for name, values in history.items():
        if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            _fail(path, f"field 'history.{name}' must be a list of numbers")
    optimizer = description.get("optimizer", "missing")
    if optimizer == "missing":
        _fail(path, "the description has no 'optimizer'")
    if optimizer is None:
        slots = 1
    else:
        if (
            not isinstance(optimizer, dict)
            or not isinstance(optimizer.get("name"), str)
            or not isinstance(optimizer.get("config"), dict)
        ):
            _fail(path, f"field 'optimizer' must be null or {{'name': str, 'config': object}}, got {optimizer!r}")
        if optimizer["name"] not in OPTIMIZERS:
            _fail(path, f"field 'optimizer.name' {optimizer['name']!r} is not one of {sorted(OPTIMIZERS)}")
        slots = max(len(OPTIMIZERS[optimizer["name"]].state_names), 1)
    training = description.get("training")
    if training is not None and not (
        isinstance(training, dict) and integer(training.get("ranks")) and training["ranks"] >= 1
    ):
        _fail(path, f"field 'training' must be {{'ranks': int >= 1}}, got {training!r}")
    description["_slots"] = slots
    return description
