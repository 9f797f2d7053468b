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
    """Every benchmark, each beside its peers measured in the same run, as markdown tables.

    bench/run.py (transport vs aioquic, tunnels vs ``ssh -R``; arguments after
    ``--`` go to it), then the emulated-link profiles (a)-(e) of bench.lossy,
    which need root for network namespaces and TUN (``nox -s lossy -- ARGS``
    runs them alone, with arguments).
    """
    session.run("python", "bench/run.py", *session.posargs)
    if os.geteuid() != 0:
        session.warn("skipping bench.lossy: the link emulator needs root (namespaces and TUN)")
        return
    session.run("python", "-m", "bench.lossy")


@nox.session
def lossy(session: nox.Session) -> None:
    """Seam, TCP, ssh and aioquic across a userspace-emulated link (needs root for namespaces and TUN)."""
    session.run("python", "-m", "bench.lossy", *session.posargs)
