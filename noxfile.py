"""Developer sessions: ``nox -s tests lint typecheck fuzz bench``.

Sessions run in the current interpreter (``venv_backend="none"``): install
once with ``pip install -e '.[dev]'`` and every session works offline. This
keeps the sessions identical to what ``.ci/run`` runs.
"""

from __future__ import annotations

import os
import pathlib

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = pathlib.Path(__file__).parent


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (unit, trio tier, end to end)."""
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the transport library (configured in pyproject.toml)."""
    session.run("mypy", "seam")


@nox.session
def fuzz(session: nox.Session) -> None:
    """Each atheris harness in fuzz/ for a bounded time (SEAMLESS_FUZZ_SECONDS, default 20)."""
    seconds = os.environ.get("SEAMLESS_FUZZ_SECONDS", "20")
    harnesses = session.posargs or sorted(f"fuzz.{p.stem}" for p in (ROOT / "fuzz").glob("fuzz_*.py"))
    for harness in harnesses:
        session.log(f"fuzzing {harness} for {seconds} s")
        session.run(
            "python",
            "-m",
            harness,
            f"-max_total_time={seconds}",
            "-rss_limit_mb=4096",
            "-print_final_stats=1",
        )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks beside their peers measured in the same run; prints a markdown table."""
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def lossy(session: nox.Session) -> None:
    """Seam, TCP, ssh and aioquic across a userspace-emulated link (needs root for namespaces and TUN)."""
    session.run("python", "-m", "bench.lossy", *session.posargs)
