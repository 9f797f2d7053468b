"""Fuzz the control-protocol decoder: arbitrary bytes decode or raise ControlError, nothing else."""

from __future__ import annotations

from fuzz._harness import fuzz
from seamless_relay.control import ControlDecoder, ControlError, encode


def TestOneInput(data: bytes) -> None:
    decoder = ControlDecoder()
    try:
        # Split the input at a point the data chooses, so partial frames are exercised too.
        cut = data[0] % (len(data) + 1) if data else 0
        messages = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
    except ControlError:
        return
    for message in messages:
        again = ControlDecoder().feed(encode(message))
        assert again == [message], (message, again)


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
