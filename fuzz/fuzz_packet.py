"""Fuzz the packet header parser: arbitrary bytes parse or raise ParseError, nothing else."""

from __future__ import annotations

from fuzz._harness import fuzz
from seam.errors import ParseError
from seam.packet import parse_header


def TestOneInput(data: bytes) -> None:
    try:
        parse_header(data)
    except ParseError:
        pass


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
