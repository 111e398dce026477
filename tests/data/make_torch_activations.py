"""Write PyTorch's values and derivatives of the activations fastgd shares with it and that need
the pre-activation (``gelu``, ``gelu_tanh``, ``silu``: every entry of the activation table whose
``needs_z`` is set), so that tests/test_activations_torch.py compares fastgd against PyTorch
everywhere, PyTorch installed or not.

Run where PyTorch is installed (CPU build), from the repository root::

    python tests/data/make_torch_activations.py

and commit the file it writes (``tests/data/torch_activations.npz``). It holds ``z`` (float64,
|z| <= 3 on a fine grid, plus points out to ±30), and for each activation ``<name>_value`` and
``<name>_derivative`` (float64, from ``torch.nn`` modules built as the table's ``torch`` column
says and ``torch.autograd``), and ``meta``: a JSON string with the versions and the command.
"""

from __future__ import annotations

import json
import os

import numpy as np

from fastgd.registry import ACTIVATIONS

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_activations.npz")
COMMAND = "python tests/data/make_torch_activations.py"


def grid():
    """The points: 1201 evenly over [-3, 3] and a few far out (saturation)."""
    far = np.array([-30.0, -20.0, -10.0, -6.0, -4.5, 4.5, 6.0, 10.0, 20.0, 30.0])
    return np.concatenate([np.linspace(-3.0, 3.0, 1201), far])


def torch_values(name, z):
    import torch

    module_name, arguments = ACTIVATIONS[name].torch
    module = getattr(torch.nn, module_name)(**arguments)
    x = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    value = module(x)
    (derivative,) = torch.autograd.grad(value.sum(), x)
    return value.detach().numpy(), derivative.numpy()


def main():
    import torch

    z = grid()
    arrays = {"z": z}
    names = [name for name, spec in ACTIVATIONS.items() if spec.needs_z]
    for name in names:
        arrays[f"{name}_value"], arrays[f"{name}_derivative"] = torch_values(name, z)
    meta = {"torch": torch.__version__, "numpy": np.__version__, "command": COMMAND, "activations": names}
    np.savez(OUTPUT, meta=json.dumps(meta), **arrays)
    print(f"wrote {OUTPUT}: {', '.join(names)} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
