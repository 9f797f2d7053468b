"""Compiles Seam's sans-IO core with mypyc; everything else is in pyproject.toml.

The core is plain, fully annotated Python (``mypy --strict``), so mypyc turns
it into C extension modules with no change of source: attribute access and
calls between its classes become C, which halves the CPU Seam spends per
packet (README, Development). The batched UDP I/O is compiled too; the rest
of the trio layer, the relay and the client stay interpreted.

Compiling needs a C compiler and the Python headers. Without them, or with
``SEAMLESS_PURE_PYTHON=1`` set, the same modules install as plain Python and
behave the same, only slower. A compiled module shadows its ``.py`` file:
after editing one in an editable install, rebuild with ``pip install -e .``
(``seam`` warns at import when a compiled module is older than its source).
"""

from __future__ import annotations

import os

from setuptools import setup

# The per-packet path and what it calls; the rest of seam/_trio (async, trio) and the handshake stay
# interpreted.
COMPILED_MODULES = [
    "seam/buffer.py",
    "seam/packet.py",
    "seam/rangeset.py",
    "seam/crypto.py",
    "seam/recovery.py",
    "seam/pacing.py",
    "seam/stream.py",
    "seam/ecn.py",
    "seam/pmtud.py",
    "seam/fec.py",
    "seam/events.py",
    "seam/connection.py",
    "seam/congestion/base.py",
    "seam/congestion/newreno.py",
    "seam/congestion/cubic.py",
    "seam/congestion/bbr.py",
    "seam/_trio/udp_batch.py",  # sync: batched sendmsg/recvmsg, GSO grouping, GRO splitting
    "seam/_trio/routing.py",  # sync: each received datagram to its connection's core
]

# The build environment holds only setuptools and mypy: third-party imports are
# typed as Any there, and the strict flags that would then fail are relaxed (the
# strict check of seam/ itself is `mypy seam`, in CI).
MYPY_FLAGS = ["--config-file=", "--ignore-missing-imports", "--no-warn-return-any", "--allow-subclassing-any"]


def compiled_extensions() -> list[object]:
    if os.environ.get("SEAMLESS_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    extensions = mypycify([*MYPY_FLAGS, *COMPILED_MODULES], opt_level="3", group_name="seam_core")
    for extension in extensions:
        extension.optional = True  # no compiler: install the plain Python modules instead
    return list(extensions)


setup(ext_modules=compiled_extensions())
