"""Atheris harnesses, one per parser; ``nox -s fuzz`` runs them all.

They fuzz seam's plain-Python modules even where setup.py compiled them:
atheris measures coverage only in Python bytecode, and coverage is what
guides it. The tests run the compiled build.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType


class _SeamFromSource(importlib.abc.MetaPathFinder):
    """Finds ``seam.*`` modules by their ``.py`` file, ahead of a compiled one beside it."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not name.startswith("seam.") or not path:
            return None
        for entry in path:
            source = Path(entry) / (name.rpartition(".")[2] + ".py")
            if source.is_file():
                return importlib.util.spec_from_file_location(name, source)
        return None


sys.meta_path.insert(0, _SeamFromSource())
