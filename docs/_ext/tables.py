"""The tables of activations, losses and optimizers, drawn from their one source at build time.

``fastgd.registry.ACTIVATIONS`` and ``LOSSES`` (read from ``kernels/activations.py`` and
``kernels/losses.py``) and the optimizer declarations (``kernels/optim.py``, through the public
classes of ``fastgd.optimizers``) become ``_generated/activations.rst``, ``losses.rst`` and
``optimizers.rst``, which the user guide includes: a new table entry appears in the docs with no
page edited.
"""

from __future__ import annotations

import pathlib

GENERATED = "_generated"


def _escaped(cell):
    # A formula's |x| would read as an rST substitution reference: escape the bars outside
    # ``literals`` (inside them a backslash would be shown as is).
    parts = str(cell).split("``")
    return "``".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def _list_table(headers, rows):
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [headers, *rows]:
        lines.append(f"   * - {_escaped(row[0])}")
        lines.extend(f"     - {_escaped(cell) if cell != '' else ' '}" for cell in row[1:])
    return lines + [""]


def _torch(spec):
    if spec.torch is None:
        return "(none: identity)" if spec.name == "identity" else ""
    module, arguments = spec.torch
    shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    return f"``torch.nn.{module}({shown})``"


def _onnx(spec):
    if spec.onnx is None:
        return "" if spec.exportable else "(not exportable)"
    if isinstance(spec.onnx[0], str):
        return f"``{spec.onnx[0]}``"
    return " · ".join(f"``{step[0]}``" for step in spec.onnx)


def activation_rows():
    from fastgd.registry import ACTIVATIONS

    rows = []
    for spec in ACTIVATIONS.values():
        where = "output layer only" if spec.output_only else "hidden or output"
        derivative = "reads z (kept per layer)" if spec.needs_z else "reads the output a"
        rows.append(
            [
                f"``{spec.name}``",
                where,
                derivative,
                f"``{spec.sklearn}``" if spec.sklearn else "fastgd's own",
                _torch(spec),
                _onnx(spec),
            ]
        )
    return rows


# What each kind of targets a loss takes means (``LossSpec.targets``).
_TARGETS = {
    "any": "any",
    "classes": "integer labels, one-hot or probability rows (soft targets)",
    "unit interval": "in [0, 1]",
    "non-negative": "≥ 0",
}


def loss_rows():
    from fastgd.registry import LOSSES

    rows = []
    for spec in LOSSES.values():
        parameter = "" if spec.parameter is None else f"``{spec.parameter[0]}`` (default {spec.parameter[1]:g})"
        rows.append(
            [
                f"``{spec.name}``",
                spec.formula,
                spec.required_output or "any",
                _TARGETS[spec.targets],
                "mean over rows" if spec.mean else "sum over rows",
                parameter,
            ]
        )
    return rows


def optimizer_rows():
    import inspect

    from fastgd.optimizers import OPTIMIZERS

    rows = []
    for cls in OPTIMIZERS.values():
        spec = cls.spec
        shown = ", ".join(str(parameter) for parameter in inspect.signature(cls).parameters.values())
        rows.append([f"``{cls.__name__}({shown})``", spec.formula, ", ".join(spec.state) or "(none)"])
    return rows


def tables():
    """The generated pages: (file name, its reStructuredText lines) for each table."""
    activation_table = _list_table(
        ["name", "layers", "derivative", "scikit-learn", "PyTorch", "ONNX"], activation_rows()
    )
    loss_table = _list_table(
        ["loss", "definition", "output activation", "targets", "over a batch", "parameter"], loss_rows()
    )
    optimizer_table = _list_table(["optimizer", "update rule", "state"], optimizer_rows())
    return (("activations.rst", activation_table), ("losses.rst", loss_table), ("optimizers.rst", optimizer_table))


def _generate(app):
    folder = pathlib.Path(app.srcdir) / GENERATED
    folder.mkdir(exist_ok=True)
    for name, lines in tables():
        text = "\n".join(lines)
        path = folder / name
        if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache
            path.write_text(text)


def setup(app):
    app.connect("builder-inited", _generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
