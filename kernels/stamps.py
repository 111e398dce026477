"""Source stamps: keep Numba's on-disk cache from serving code compiled from old sources.

Numba's cache (``cache=True``) keys a cached function by its own file's contents, so an edit to
another module it calls or inlines would go unnoticed (Numba's documentation, "Notes on
caching": changes to functions in other files are not detected). Every kernel module that
holds compiled code therefore carries a stamp line, ``# stamp: <hash>``, the hash of the
sources of every kernel module it imports (directly or not, stamp lines left out). An edit to
``layout.py`` changes the stamp of every module built on it, so their cached code is
recompiled; a module nothing depends on keeps its cache.

After editing a kernel module, run ``python -m fastgd.kernels.stamps`` to rewrite the stamps
(the tests fail while one is out of date). A stamp out of date at import turns the cache off
for the process (``fresh``): never a stale result, only a slower start.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys

FOLDER = os.path.dirname(os.path.abspath(__file__))
STAMP = re.compile(r"^# stamp: [0-9a-f]*\n", re.M)
# ``from .module import ...`` and ``from . import module, ...`` at the top of a module.
_IMPORTS = re.compile(r"^from \.(\w*) import (?:\(([^)]*)\)|([\w, \t]+)$)", re.M)


def _source(name: str) -> str:
    with open(os.path.join(FOLDER, name + ".py"), encoding="utf-8") as file:
        return file.read()


def modules() -> list:
    """Every kernel module's name."""
    return sorted(name[:-3] for name in os.listdir(FOLDER) if name.endswith(".py"))


def dependencies(name: str) -> list:
    """The kernel modules ``name`` builds on, itself included, directly or not."""
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module in seen or not os.path.exists(os.path.join(FOLDER, module + ".py")):
            continue
        seen.add(module)
        for source, listed, names in _IMPORTS.findall(_source(module)):
            names = (listed or names).replace("\n", ",")
            todo.extend(
                [source] if source else [part.split(" as ")[0].strip() for part in names.split(",") if part.strip()]
            )
    return sorted(seen)


def expected(name: str) -> str:
    """The stamp ``name`` should carry: a hash of its dependencies' sources without stamps."""
    digest = hashlib.sha256()
    for module in dependencies(name):
        digest.update(module.encode() + b"\0" + STAMP.sub("", _source(module)).encode() + b"\0")
    return digest.hexdigest()[:32]


def carried(name: str) -> str | None:
    """The stamp ``name`` carries, or None."""
    found = STAMP.search(_source(name))
    return found.group(0).split(":")[1].strip() if found else None


def stale() -> list:
    """The stamped modules whose stamp is out of date."""
    return [name for name in modules() if carried(name) is not None and carried(name) != expected(name)]


def fresh() -> bool:
    """Whether every stamp is up to date (False when the sources cannot be read)."""
    try:
        return not stale()
    except OSError:
        return False


def write() -> list:
    """Rewrite every stamp line that is out of date; returns the modules changed."""
    changed = []
    for name in modules():
        now = carried(name)
        if now is None or now == expected(name):
            continue
        path = os.path.join(FOLDER, name + ".py")
        text = STAMP.sub(f"# stamp: {expected(name)}\n", _source(name), count=1)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        changed.append(name)
    return changed


def main() -> int:
    changed = write()
    print("stamps rewritten: " + (", ".join(changed) if changed else "none (all current)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
