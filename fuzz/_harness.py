"""The one way every harness in fuzz/ starts atheris."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


def fuzz(test_one_input: Callable[[bytes], None], seeds: Sequence[bytes] = ()) -> None:
    """Instrument everything imported so far and run libFuzzer with the command-line flags.

    ``seeds`` are valid inputs the fuzzer starts from when the command line
    names no corpus directory. They matter where the parser's work happens in
    native code that atheris cannot see (pydantic-core's JSON): no coverage
    guides random bytes towards a message that decodes, so without them the
    paths after a successful decode are rarely reached at all.
    """
    import atheris

    atheris.instrument_all()
    argv = list(sys.argv)
    with tempfile.TemporaryDirectory(prefix="seamless-fuzz-") as corpus:
        if seeds and not any(not arg.startswith("-") for arg in argv[1:]):
            for index, seed in enumerate(seeds):
                (Path(corpus) / f"seed-{index}").write_bytes(seed)
            argv.append(corpus)
        atheris.Setup(argv, test_one_input)
        atheris.Fuzz()
