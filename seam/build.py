"""Which build of the core is running: compiled by mypyc (setup.py) or plain Python.

Benchmarks report it beside their figures. In an editable install a compiled
module shadows its source, so an edit does nothing until the next build:
``stale_modules`` names those, and importing seam warns about them.
"""

from __future__ import annotations

import importlib.machinery
import warnings
from pathlib import Path

import seam.connection

_PACKAGE = Path(__file__).parent

CORE_COMPILED = Path(seam.connection.__file__ or "").suffix != ".py"
"""True when the per-packet path runs as C extension modules."""


def stale_modules() -> list[str]:
    """Source files newer than the compiled module that shadows them, in a source checkout.

    Only where ``setup.py`` sits beside the package (an editable install): an
    installed wheel's file times say when pip unpacked it, not when it was built.
    """
    if not (_PACKAGE.parent / "setup.py").is_file():
        return []
    stale = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for compiled in _PACKAGE.rglob(f"*{suffix}"):
            source = compiled.with_name(compiled.name[: -len(suffix)] + ".py")
            if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
                stale.append(str(source.relative_to(_PACKAGE.parent)))
    return sorted(stale)


def describe() -> str:
    return "compiled (mypyc)" if CORE_COMPILED else "interpreted"


def warn_if_stale() -> None:
    stale = stale_modules()
    if stale:
        warnings.warn(
            f"seam: {', '.join(stale)} changed after the last build, and the compiled copy is what runs:"
            " rebuild with `pip install -e .` (SEAMLESS_PURE_PYTHON=1 installs without compiling)",
            stacklevel=2,
        )
