"""Shared test plumbing.

``require_tool`` skips a test whose system tool is missing, with the command
that installs it; under ``SEAMLESS_REQUIRE_ALL=1`` (CI) every skip becomes a
failure, so CI cannot go green by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

import seam
import seam.build
from seam.testing import shared_identities

if TYPE_CHECKING:
    from tests.procs import ProcessGroup

REQUIRE_ALL = os.environ.get("SEAMLESS_REQUIRE_ALL") == "1"
SERVER_IDENTITY, _ = shared_identities()

INSTALL_HINTS = {
    "sshd": "apt-get install openssh-server",
    "ssh": "apt-get install openssh-client",
    "redis-server": "apt-get install redis-server",
    "redis-cli": "apt-get install redis-tools",
    "dnsmasq": "apt-get install dnsmasq-base",
    "dig": "apt-get install dnsutils",
    "curl": "apt-get install curl",
}


def require_tool(name: str) -> str:
    """The tool's path; skips (or fails under SEAMLESS_REQUIRE_ALL=1) when it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")  # daemons live in sbin
    if path is None:
        hint = INSTALL_HINTS.get(name, f"install {name}")
        message = f"needs `{name}` on PATH; install it with {hint}"
        if REQUIRE_ALL:
            pytest.fail(f"{message} (SEAMLESS_REQUIRE_ALL=1 forbids skipping)")
        pytest.skip(message)
    return path


def pytest_configure(config: pytest.Config) -> None:
    stale = seam.build.stale_modules()
    if stale:  # the compiled copies would run, not the edited sources
        changed = ", ".join(stale)
        raise pytest.UsageError(f"{changed} changed after the last build: run `pip install -e .` first")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped under SEAMLESS_REQUIRE_ALL=1: {reason}"


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Every process a test starts, stopped by PID when the test ends."""
    from tests.procs import ProcessGroup  # here, so the conftest also works copied on its own

    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


@asynccontextmanager
async def running_server(
    handler: Callable[[seam.SeamConnection], Awaitable[object]],
    config: seam.SeamConfig | None = None,
) -> AsyncIterator[seam.SeamListener]:
    """A Seam server on a loopback port, with the shared test identity, for the ``async with`` body."""
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            lambda task_status: seam.serve(
                handler, "127.0.0.1", 0, identity=SERVER_IDENTITY, config=config, task_status=task_status
            )
        )
        yield listener
        nursery.cancel_scope.cancel()
