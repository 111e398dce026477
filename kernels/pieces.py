"""The compiled pieces and the table of them a network's kernels call.

A piece is a small kernel compiled once per dtype and shared by every configuration: an
activation's forward and derivative over a block (``activations``), a loss's row values and
output local gradients (``losses``), each path of each matrix product (``products``), an
optimizer's update over a chunk (``optim``), the forward and backward passes that call those
(``passes``), the loop's optional stages (``condition``, ``exchange``). Kernels call pieces by
address (``compat.call_piece``), so no kernel contains another's code: a network that changes
its activation, loss, optimizer or sizes needs at most the few pieces it has not used before,
each compiled (or loaded from the cache) on its own, and compilation grows with the sum of the
options, not their product.

Each kind of piece has one argument list (``argument_types``); every piece of a kind is compiled
for exactly those types, and the kernels that call it pass exactly those.

``table(...)`` is the ``pieces`` array (int64, ``layout.PIECE_*``) of one network and fit.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from numba import types

from . import activations, condition, epoch_end, exchange, losses, optim, passes, phases, products
from .compat import array_type, call_piece, kernel, piece_address
from .config import JIT_OPTIONS
from .layout import (
    PIECE_BACKWARD,
    PIECE_CONDITION,
    PIECE_EXCHANGE,
    PIECE_FINITE,
    PIECE_FORWARD,
    PIECE_GATHER,
    PIECE_LAYERS,
    PIECE_LOSS,
    PIECE_MONITOR,
    PIECE_NN_BLAS,
    PIECE_NN_LOOPS,
    PIECE_NN_TILES,
    PIECE_NT_BLAS,
    PIECE_OUTPUT,
    PIECE_OUTPUT_SLOPE,
    PIECE_SAVE,
    PIECE_TN_BLAS,
    PIECE_TN_LOOPS,
    PIECE_TN_TILES,
    PIECE_UPDATE,
    PIECE_VALUE,
    PIECE_VISIT,
    META_ACTIVATION,
    RULE_MODE,
    RULE_VALIDATE,
    STOP_NONE,
    VISIT_CHANNEL,
)
from .products import paths

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def argument_types(kind: str, dtype, bundles=None) -> tuple:
    """The argument types every piece of ``kind`` is compiled for, for arrays of ``dtype``.
    ``bundles``: the Numba types of the (work, settings) bundles, for the "condition" kind."""
    values, values_2d = array_type(dtype), array_type(dtype, 2)
    inputs, inputs_2d = array_type(dtype, readonly=True), array_type(dtype, 2, readonly=True)
    i64, f64 = types.int64, types.float64
    control, meta, floats = array_type(np.int64), array_type(np.int64, 2), array_type(np.float64)
    team = (i64, i64, control)
    if kind == "activation":  # mode, target, start, count, width, source, source start
        return (i64, values, i64, i64, i64, values, i64)
    if kind == "loss":  # z, a, y, row_scale, delta (each with its start), rows, outputs
        return (values, i64, values, i64, values, i64, values, i64, values, i64, i64, i64)
    if kind == "product":  # control, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc
        return (control, i64, i64, i64, values, i64, i64, values, i64, i64, values, i64, i64)
    if kind == "update":  # params, grads, state, step, lr, hyper, start, stop
        return (values, values, values_2d, i64, f64, floats, i64, i64)
    if kind == "forward":
        return (*team, control, values, meta, values, i64, values, values, values, values, values, floats, values, types.boolean)
    if kind == "backward":
        return (*team, control, values, values, meta, values, i64, values, values, floats, values, f64, f64)
    if kind == "exchange":  # mode, team, channel, gradients, scalars, sample_weight, order, batch_size, value
        return (i64, *team, i64, values_2d, floats, inputs, control, i64, f64)
    if kind == "condition":
        work, settings = bundles
        return (i64, *team, values, meta, work, i64, i64, i64, settings)
    if kind == "save":  # team, params to, params from, state to, state from
        return (*team, values, values, values, values)
    if kind == "finite":  # team, params, state, partials
        return (*team, values, values, floats)
    if kind == "gather":  # X, Y, sample_weight, order, x_batch, y_batch, row_scale, start, first, stop, inv, is_mean
        return (inputs_2d, inputs_2d, inputs, control, values, values, values, i64, i64, i64, types.float32 if np.dtype(dtype) ==
                np.float32 else f64, types.boolean)  # fmt: skip
    if kind == "value":  # meta, rows, partials, l1, l2
        return (meta, i64, floats, f64, f64)
    if kind == "monitor":  # team, pieces, params, meta, end, epoch, train loss
        return (*team, control, values, meta, bundles[0], i64, f64)
    if kind == "visit":  # channel, kind, epoch
        return (i64, i64, i64)
    raise ValueError(f"unknown kind of piece {kind!r}")


class Piece(NamedTuple):
    name: str
    kind: str
    dispatcher: object


def _registry():
    found = [Piece(f"activation_{activations.SPECS[code].name}", "activation", piece) for code, piece in activations.PIECES.items()]
    found += [Piece(f"loss_{losses.SPECS[code].name}", "loss", piece) for code, piece in losses.PIECES.items()]
    found += [Piece(f"product_{path}_{shape}", "product", piece) for (path, shape), piece in products.PIECES.items()]
    found += [Piece(f"update_{optim.SPECS[code].name}", "update", piece) for code, piece in optim.UPDATES.items()]
    found += [Piece("forward_pass", "forward", passes.forward_pass), Piece("backward_pass", "backward", passes.backward_pass),
              Piece("exchange", "exchange", exchange.exchange), Piece("save", "save", phases.save),
              Piece("finite", "finite", phases.finite), Piece("gather", "gather", phases.gather),
              Piece("batch_value", "value", passes.batch_value), Piece("visit", "visit", epoch_end.visit)]  # fmt: skip
    return {piece.name: piece for piece in found}


# Every piece by name (the condition stage is compiled for the bundles' types: ``stage_address``).
PIECES = _registry()

_ADDRESSES = {}
# (name, dtype name, seconds): what this process compiled or loaded, in order (for ``python -m
# fastgd compile`` and the start-up figures).
LOG = []


def address(name: str, dtype) -> int:
    """The address of piece ``name`` compiled for ``dtype`` (compiled, or loaded from the
    cache, on first use in this process)."""
    dtype = np.dtype(dtype)
    key = (name, dtype)
    found = _ADDRESSES.get(key)
    if found is None:
        piece = PIECES[name]
        start = time.perf_counter()
        found = _ADDRESSES[key] = piece_address(piece.dispatcher, argument_types(piece.kind, dtype))
        LOG.append((name, dtype.name, time.perf_counter() - start))
    return found


def stages_of(settings, end) -> list:
    """The optional stages a fit binds: ``"condition"`` (clipping, gradient health),
    ``"monitor"`` (validation, the stopping rule), ``"visit"`` (visits to Python)."""
    stages = ["condition"] if settings.track or settings.clip_norm > 0.0 or settings.clip_value > 0.0 else []
    if end.rule[RULE_MODE] != STOP_NONE or end.rule[RULE_VALIDATE] != 0.0:
        stages.append("monitor")
    if end.visits[VISIT_CHANNEL] != 0:
        stages.append("visit")
    return stages


def stage_address(dtype, work_type, settings_type) -> int:
    """The address of the condition stage (clipping and gradient health) for these bundles."""
    key = ("condition", np.dtype(dtype), work_type, settings_type)
    found = _ADDRESSES.get(key)
    if found is None:
        start = time.perf_counter()
        found = _ADDRESSES[key] = piece_address(condition.condition, argument_types("condition", dtype, (work_type, settings_type)))
        LOG.append(("condition", np.dtype(dtype).name, time.perf_counter() - start))
    return found


def bind_stages(pieces, stages, dtype, work_type, settings_type, end_type) -> None:
    """Fill ``pieces``' stage slots for ``stages`` (``stages_of``)."""
    if "condition" in stages:
        pieces[PIECE_CONDITION] = stage_address(dtype, work_type, settings_type)
    if "monitor" in stages:
        key = ("monitor", np.dtype(dtype), end_type)
        if key not in _ADDRESSES:
            start = time.perf_counter()
            _ADDRESSES[key] = piece_address(epoch_end.monitor, argument_types("monitor", dtype, (end_type,)))
            LOG.append(("monitor", np.dtype(dtype).name, time.perf_counter() - start))
        pieces[PIECE_MONITOR] = _ADDRESSES[key]
    if "visit" in stages:
        pieces[PIECE_VISIT] = address("visit", dtype)


_TABLES = {}


def needed(meta, loss: int, optimizer: int, dtype, distributed: bool = False) -> list:
    """The names of the pieces ``table`` binds for this network and fit (see ``table``)."""
    dtype = np.dtype(dtype)
    codes = [int(code) for code in meta[:, META_ACTIVATION]]
    tiles, blas = paths(meta, dtype)
    names = ["forward_pass", "backward_pass", f"loss_{losses.SPECS[int(loss)].name}"]
    names += sorted({f"activation_{activations.SPECS[code].name}" for code in codes})
    for shape in ("nn", "tn"):
        names.append(f"product_loops_{shape}")
        names += [f"product_tiles_{shape}"] if tiles else []
        names += [f"product_blas_{shape}"] if blas else []
    names += ["product_blas_nt"] if blas else []
    names += [f"update_{optim.SPECS[int(optimizer)].name}", "save", "finite", "gather", "batch_value"] if optimizer >= 0 else []
    names += ["exchange"] if distributed else []
    return names


def table(meta, loss: int, optimizer: int, dtype, distributed: bool = False) -> np.ndarray:
    """The ``pieces`` array of a network (``meta``, ``loss``) training with ``optimizer`` (an
    optimizer code, or -1 for none: evaluation only), in ``dtype``; ``distributed``: with the
    exchange between ranks. The optional stages' slots are 0 (``bind_stages`` fills them in a
    copy). Do not write into it: it is shared by every fit of the same configuration.

    Only the pieces this network can reach are compiled (``needed``): the product paths its
    layer sizes can take (``products.paths``), its activations, its loss and its optimizer.
    Slots of paths it can never take hold a path it can (the same arguments), except BLAS's,
    which hold 0.
    """
    dtype = np.dtype(dtype)
    codes = tuple(int(code) for code in meta[:, META_ACTIVATION])
    tiles, blas = paths(meta, dtype)
    key = (codes, int(loss), int(optimizer), dtype, tiles, blas, bool(distributed))
    found = _TABLES.get(key)
    if found is not None:
        return found
    output = activations.SPECS[codes[-1]]
    loss_spec = losses.SPECS[int(loss)]
    pieces = np.zeros(PIECE_LAYERS + len(codes), dtype=np.int64)
    pieces[PIECE_FORWARD] = address("forward_pass", dtype)
    pieces[PIECE_BACKWARD] = address("backward_pass", dtype)
    for layer, code in enumerate(codes):
        pieces[PIECE_LAYERS + layer] = address(f"activation_{activations.SPECS[code].name}", dtype)
    pieces[PIECE_OUTPUT] = pieces[PIECE_LAYERS + len(codes) - 1]
    if not loss_spec.fused and output.code != activations.IDENTITY:
        pieces[PIECE_OUTPUT_SLOPE] = pieces[PIECE_OUTPUT]
    pieces[PIECE_LOSS] = address(f"loss_{loss_spec.name}", dtype)
    for shape, (loops_slot, tiles_slot, blas_slot) in (("nn", (PIECE_NN_LOOPS, PIECE_NN_TILES, PIECE_NN_BLAS)),
                                                        ("tn", (PIECE_TN_LOOPS, PIECE_TN_TILES, PIECE_TN_BLAS))):  # fmt: skip
        pieces[loops_slot] = address(f"product_loops_{shape}", dtype)
        pieces[tiles_slot] = address(f"product_tiles_{shape}", dtype) if tiles else pieces[loops_slot]
        if blas:
            pieces[blas_slot] = address(f"product_blas_{shape}", dtype)
    if blas:
        pieces[PIECE_NT_BLAS] = address("product_blas_nt", dtype)
    if optimizer >= 0:
        pieces[PIECE_UPDATE] = address(f"update_{optim.SPECS[int(optimizer)].name}", dtype)
        for slot, name in ((PIECE_SAVE, "save"), (PIECE_FINITE, "finite"), (PIECE_GATHER, "gather"), (PIECE_VALUE, "batch_value")):
            pieces[slot] = address(name, dtype)
    if distributed:
        pieces[PIECE_EXCHANGE] = address("exchange", dtype)
    _TABLES[key] = pieces
    return pieces


# --------------------------------------------------------------------------- from Python
# Pieces have no Python wrapper (kernels only call each other by address); Python calls one
# through its kind's trampoline, a kernel that takes the address and the piece's arguments.
_DONE = np.int64(0)


@kernel(**JIT_OPTIONS)
def _run_activation(address, mode, target, t_start, count, width, source, s_start):
    return call_piece(_DONE, address, (mode, target, t_start, count, width, source, s_start))


@kernel(**JIT_OPTIONS)
def _run_loss(address, z, z_start, a, a_start, y, y_start, row_scale, scale_start, delta, delta_start, rows, n):
    return call_piece(0.0, address, (z, z_start, a, a_start, y, y_start, row_scale, scale_start, delta, delta_start, rows, n))


@kernel(**JIT_OPTIONS)
def _run_product(address, control, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    return call_piece(_DONE, address, (control, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc))


@kernel(**JIT_OPTIONS)
def _run_update(address, params, grads, state, step, lr, hyper, start, stop):
    return call_piece(_DONE, address, (params, grads, state, step, lr, hyper, start, stop))


_TRAMPOLINES = {"activation": _run_activation, "loss": _run_loss, "product": _run_product, "update": _run_update}


def run(name: str, dtype, *args):
    """Call piece ``name`` compiled for ``dtype`` from Python (the tests and the layer kernels
    do): ``args`` must be of exactly its kind's argument types (``argument_types``)."""
    piece = PIECES[name]
    trampoline = _TRAMPOLINES[piece.kind]
    argtypes = (types.int64, *argument_types(piece.kind, dtype))
    if argtypes not in trampoline.overloads:
        trampoline.compile(argtypes)
    return trampoline(address(name, dtype), *args)
