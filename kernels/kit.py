"""A network's compiled functions as one argument: its passes and its pieces bound once into a
StructRef (``numba.experimental.structref``, documented in Numba's "Extending" guide), so that a
compiled call from Python (``predict``, ``loss``, ``gradients``) passes one reference instead of
some twenty first-class function objects, each of which Numba unboxes with a Python call (~5 µs
apiece: a tuple of 21 costs ~150 µs per call, the reference under 1 µs).

``make_kit(phases, pieces)`` builds one (a cached kernel, compiled once per dtype);
``kit_for(phases, pieces)`` keeps one per pair of sealed bundles (``pieces.seal``).
"""

from __future__ import annotations

from numba import types
from numba.experimental import structref

from .config import DISABLE_JIT
from .jit import kernel


@structref.register
class KitType(types.StructRef):
    """The Numba type of a ``Kit``: its fields' types (the bundles' NamedTuple types)."""

    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class Kit(structref.StructRefProxy):
    """The passes (``phases.Phases``) and the pieces (``pieces.Pieces``) of one network, as one
    compiled object; its fields are read in compiled code (``kit.phases``, ``kit.pieces``)."""


structref.define_proxy(Kit, KitType, ["phases", "pieces"])


@kernel
def make_kit(phases, pieces):
    """A ``Kit`` of ``phases`` and ``pieces``."""
    return Kit(phases, pieces)


class PlainKit:
    """What a ``Kit`` is under NUMBA_DISABLE_JIT: the two bundles as attributes."""

    def __init__(self, phases, pieces):
        self.phases, self.pieces = phases, pieces


_KITS = {}


def kit_for(phases, pieces):
    """The ``Kit`` of two bundles, built once per pair (sealed bundles live as long as the
    process, so their ids identify them)."""
    key = (id(phases), id(pieces))
    found = _KITS.get(key)
    if found is None or found[0] is not phases or found[1] is not pieces:
        found = (phases, pieces, PlainKit(phases, pieces) if DISABLE_JIT else make_kit(phases, pieces))
        _KITS[key] = found
    return found[2]
