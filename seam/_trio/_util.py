"""Small helpers for the trio layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Re-raise the lone exception of an ExceptionGroup as itself.

    Our nurseries' own tasks do not fail, so a group with one member is the
    user's exception (or ours) travelling out of the ``async with`` body;
    users of ``seam.connect`` should see a ``HandshakeError``, not a group.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from group.exceptions[0].__cause__
        raise
