"""Every public name documented: the API reference must list everything users import.

The public API is ``fastgd.__all__`` and the public names of the modules in ``PUBLIC_MODULES``:
a module's ``__all__`` where it has one, else every class and function it defines whose name has
no leading underscore, less the helpers ``INTERNAL`` lists (each with the reason it is not user
API). A name counts as documented when the API reference documents that object under any of its
paths (``fastgd.SGD`` is ``fastgd.optimizers.SGD``), or, for modules and plain values, that path.

Used twice: as a Sphinx extension, which warns (an error under ``-W``) for each public name the
built reference lacks; and by ``tests/test_docs.py``, which reads the directives of
``docs/api/*.rst`` without building (``documented_in_sources``). This module imports Sphinx only
inside ``setup``.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re

PUBLIC_MODULES = (
    "fastgd",
    "fastgd.sklearn",
    "fastgd.schedules",
    "fastgd.optimizers",
    "fastgd.callbacks",
    "fastgd.distributed",
    "fastgd.streaming",
    "fastgd.gradcheck",
    "fastgd.convert",
    "fastgd.datasets",
    "fastgd.plotting",
)

# Functions and classes these modules define for fastgd's own use, not for users (no __all__
# there says so). A new public name fails the check until it is documented or listed here.
INTERNAL = {
    # fit's helpers: turn callbacks arguments into objects, check a checkpoint path, plan calls.
    "fastgd.callbacks": {"check_callbacks", "check_checkpoint_path", "chunk_epochs", "Clock"},
    # the streaming machinery fit drives; users pass arrays and a Streaming.
    "fastgd.streaming": {
        "is_streamed",
        "blocks_of",
        "release",
        "RowReader",
        "block_shuffle_order",
        "ChunkPlan",
        "ChunkLoader",
        "check_streamed",
        "chunk_rows",
        "abs_max",
    },
}


def _import(path):
    """The object at a dotted ``path`` (a module, or an attribute of one), or None."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for name in parts[split:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        return obj
    return None


def public_api() -> dict:
    """{public path: object} for every public name (see the module docstring)."""
    api = {}
    for module_path in PUBLIC_MODULES:
        module = _import(module_path)
        if module is None:
            raise ImportError(f"public module {module_path} cannot be imported")
        names = getattr(module, "__all__", None)
        if names is None:
            names = [
                name
                for name, value in vars(module).items()
                if not name.startswith("_")
                and (inspect.isclass(value) or inspect.isfunction(value))
                and value.__module__ == module.__name__
            ]
            names = [name for name in names if name not in INTERNAL.get(module_path, ())]
        for name in names:
            api[f"{module_path}.{name}"] = getattr(module, name)
    return api


def _identity(obj):
    # Classes, functions and modules are the same object under every path; plain values
    # (``__version__``) are documented by path only.
    return id(obj) if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj) else None


def undocumented(documented_paths) -> list:
    """The public paths not documented by any of ``documented_paths`` (dotted names)."""
    paths = set(documented_paths)
    identities = {_identity(obj) for obj in map(_import, paths) if obj is not None} - {None}
    return sorted(path for path, obj in public_api().items() if path not in paths and _identity(obj) not in identities)


_DIRECTIVE = re.compile(
    r"^\s*\.\. (?:py:)?(auto)?(module|currentmodule|class|function|exception|data|attribute|method|property"
    r"|autoproperty|decorator)::\s*(\S+)",
    re.MULTILINE,
)


def documented_in_sources(folder) -> set:
    """The dotted names the ``.rst`` files in ``folder`` document, read from their directives
    (``currentmodule`` and ``module`` set the prefix of the names after them)."""
    names = set()
    for page in sorted(pathlib.Path(folder).glob("*.rst")):
        current = None
        for _auto, kind, target in _DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            if kind in ("module", "currentmodule"):
                current = target
                if kind == "module":
                    names.add(target)
                continue
            if current and _import(target) is None and _import(f"{current}.{target}") is not None:
                target = f"{current}.{target}"
            names.add(target)
    return names


def _check(app, env):
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    domain = env.get_domain("py")
    documented = set(domain.objects) | set(domain.modules)
    for path in undocumented(documented):
        logger.warning(
            f"public name {path} is not documented in the API reference (docs/api/*.rst)", type="fastgd", subtype="api"
        )


def setup(app):
    app.connect("env-check-consistency", _check)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
