"""The plain-Python copy of a seam module that setup.py compiles, for tests that patch its internals.

mypyc's classes refuse patched methods. Loading the module again from its
``.py`` source gives classes that take them, and runs the interpreted build
that installs without a compiler.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path


@functools.cache
def interpreted(name: str) -> types.ModuleType:
    """``name`` (e.g. ``seam.recovery``) executed from its source file under a name of its own."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, name
    source = Path(spec.origin).with_name(name.rpartition(".")[2] + ".py")
    copy_spec = importlib.util.spec_from_file_location(f"_interpreted.{name}", source)
    assert copy_spec is not None and copy_spec.loader is not None
    module = importlib.util.module_from_spec(copy_spec)
    sys.modules[copy_spec.name] = module  # dataclasses look their module up while the class is built
    copy_spec.loader.exec_module(module)
    return module
