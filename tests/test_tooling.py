"""The skip-or-fail rule for missing system tools."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _run(tmp_path: Path, require_all: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_x.py").write_text(
        textwrap.dedent(
            """
            from conftest import require_tool

            def test_needs_missing_tool():
                require_tool("no-such-tool-seamless-xyz")
            """
        )
    )
    env = {**os.environ, "SEAMLESS_REQUIRE_ALL": "1" if require_all else "0"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:trio", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_missing_tool_skips_with_install_hint(tmp_path: Path) -> None:
    result = _run(tmp_path, require_all=False)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout


def test_missing_tool_fails_under_require_all(tmp_path: Path) -> None:
    result = _run(tmp_path, require_all=True)
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout


def test_the_core_runs_compiled() -> None:
    """setup.py compiles seam's per-packet path with mypyc; installs without a compiler fall back."""
    import seam.build
    from tests.conftest import REQUIRE_ALL

    if not seam.build.CORE_COMPILED:
        message = (
            "seam's core is interpreted: install with a C compiler and the Python headers "
            "(apt-get install gcc python3-dev), without SEAMLESS_PURE_PYTHON, to compile it"
        )
        if REQUIRE_ALL:
            pytest.fail(f"{message} (SEAMLESS_REQUIRE_ALL=1 forbids skipping)")
        pytest.skip(message)
    import seam.connection
    import seam.recovery

    assert seam.build.describe() == "compiled (mypyc)"
    for module in (seam.connection, seam.recovery):
        assert module.__file__ is not None and not module.__file__.endswith(".py")
