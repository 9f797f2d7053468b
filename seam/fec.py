"""Forward error correction: systematic Reed-Solomon repair symbols over GF(2^8).

Theory of operation
-------------------
The sender groups the plaintext payloads of consecutive DATA packets into
*blocks* of up to K source symbols and, once a block closes, derives M repair
symbols from it. Each repair symbol travels in its own encrypted DATA packet as
a REPAIR frame. Any K of a block's K + M symbols give back all K sources (the
code is MDS), so a receiver that lost up to M packets of a block rebuilds them
as soon as enough repairs arrive, without waiting a round trip for a
retransmission. docs/fec.md is the design note: wire layout, and how
recovered packets meet ACKs, loss recovery and congestion control.

The code. A source symbol is ``len(payload)`` as two big-endian bytes followed
by the payload; symbols of one block are zero-padded to the block's longest
symbol, so lengths survive recovery. Repair ``i`` of a block is
``sum_j G[i][j] * S_j`` in GF(2^8) (polynomial 0x11D), where ``G`` is the
Cauchy matrix ``1 / (x_i + y_j)`` with ``x_i = 255 - i`` and ``y_j = j``, each
column scaled so that row 0 is all ones (repair 0 is then the plain XOR of the
sources). Every square submatrix of a Cauchy matrix is non-singular, and
scaling columns by non-zero constants keeps it so; hence every K x K submatrix
of ``[I; G]`` is invertible, i.e. any K symbols recover the block.

Speed. Symbols are never walked byte by byte in Python: multiplying a whole
symbol by a constant ``c`` is ``symbol.translate(MUL[c])`` with one 256-byte
table per constant, and adding symbols is XOR of ``int.from_bytes(...,
"little")`` values. Little-endian makes the zero padding free: a shorter
symbol is the same integer as its zero-padded form.

Objects
-------
- :class:`FecPolicy` is a frozen setting (``off``, ``auto`` or fixed ``K,M``),
  safe to share between connections; :func:`parse_fec_spec` builds one.
- :class:`FecEncoder` is per connection and per direction: it owns the open
  block, the adaptive loss estimate, the queue of repair symbols to send and
  the bookkeeping that defers retransmission of protected packets.
- :class:`FecDecoder` is per connection: it keeps recent source payloads and
  incomplete blocks under fixed bounds and returns recovered payloads.

Nothing here reads a clock or does I/O. Peer-controlled input only ever raises
:class:`FecError` (a :class:`seam.errors.ParseError`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from seam.buffer import VARINT_MAX, Reader, encode_varint, varint_size
from seam.errors import ParseError

__all__ = [
    "MAX_K",
    "MAX_M",
    "FecDecoder",
    "FecEncoder",
    "FecError",
    "FecPolicy",
    "LossEstimator",
    "RepairSymbol",
    "binomial_tail",
    "encode_repair_body",
    "encode_repairs",
    "gf_div",
    "gf_inv",
    "gf_mul",
    "max_source_payload",
    "parse_fec_spec",
    "parse_repair_body",
    "recover_payloads",
    "repair_frame_size",
    "rs_encode",
    "rs_recover",
]

# ------------------------------------------------------------------ constants

GF_POLYNOMIAL = 0x11D  # x^8 + x^4 + x^3 + x^2 + 1, primitive; the conventional Reed-Solomon field (DVB, QR)
MAX_K = 64  # source symbols per block; bounds decode work and receiver memory
MAX_M = 16  # repair symbols per block; Cauchy points x_i = 255 - i (>= 240) never meet y_j = j (< 64)
LENGTH_PREFIX = 2  # bytes of big-endian payload length in front of each source symbol
MAX_PAYLOAD = (1 << (8 * LENGTH_PREFIX)) - 1  # bytes, largest source payload a symbol can carry
MAX_REPAIR_BODY = 65535  # bytes; the body-length limit seam/packet.py applies, as for DATAGRAM
MAX_SOURCE = MAX_REPAIR_BODY - 8 - 8 - 3 - LENGTH_PREFIX  # bytes, largest payload any REPAIR body can carry

DEFAULT_K = 10  # source packets per block for "auto": ~1 ms of data at 100 Mbit/s, well under an RTT
DEFAULT_AUTO_M = 3  # most repair symbols per block in "auto" (= the 30 % overhead cap at K = 10)
TARGET_BLOCK_LOSS = 0.01  # probability a block has more erasures than repairs, issue 4
MAX_OVERHEAD = 0.30  # repair symbols / source symbols in "auto", issue 4
LOSS_ON = 0.001  # loss rate at which "auto" starts sending repairs, issue 4
LOSS_OFF = 0.0005  # ... and below which it stops (hysteresis: half of LOSS_ON)
LOSS_EWMA_GAIN = 1 / 256  # per packet; the estimate forgets with a time constant of ~256 packets

SOURCE_WINDOW = 256  # packet numbers of sources a decoder keeps; >> MAX_K + MAX_M, << the 2048 replay window
MAX_OPEN_BLOCKS = 64  # incomplete blocks a decoder holds at once
MAX_BUFFERED_BYTES = 1 << 20  # bytes of sources + repairs a decoder holds at once
ENGAGE_SPAN = 4096  # packet numbers after the latest REPAIR during which a decoder keeps sources
MAX_SENT_BLOCKS = 4096  # closed blocks an encoder tracks until their repairs are acked or lost


class FecError(ParseError):
    """A REPAIR frame, or a block it describes, is malformed or inconsistent.

    Raised only for peer input. A :class:`FecDecoder` that raised it is still
    consistent (the offending block is dropped), but the frame came in an
    authenticated packet, so the connection should close with
    PROTOCOL_VIOLATION (FRAME_ENCODING_ERROR when parsing failed).
    """


# ------------------------------------------------------------ GF(2^8) field


def _build_tables() -> tuple[bytes, tuple[int, ...]]:
    exp = bytearray(512)
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= GF_POLYNOMIAL
    exp[255:510] = exp[0:255]
    return bytes(exp), tuple(log)


_EXP, _LOG = _build_tables()  # antilog (doubled, so no "mod 255") and log tables; _LOG[0] is unused


def gf_mul(a: int, b: int) -> int:
    """Product of two field elements."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_inv(a: int) -> int:
    """Multiplicative inverse; ``a`` must be non-zero."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return _EXP[255 - _LOG[a]]


def gf_div(a: int, b: int) -> int:
    """``a / b``; ``b`` must be non-zero."""
    if b == 0:
        raise ZeroDivisionError("division by 0 in GF(2^8)")
    if a == 0:
        return 0
    return _EXP[_LOG[a] + 255 - _LOG[b]]


_LOG_NONZERO = bytes(_LOG[1:])  # log x for x = 1..255


def _mul_table(c: int) -> bytes:
    if c == 0:
        return bytes(256)
    offset = _LOG[c]
    return b"\x00" + _LOG_NONZERO.translate(_EXP[offset : offset + 256])  # x -> exp(log c + log x)


MUL: tuple[bytes, ...] = tuple(_mul_table(c) for c in range(256))
"""``symbol.translate(MUL[c])`` multiplies every byte of ``symbol`` by ``c``."""

# COEF[i][j]: coefficient of source j in repair i (column-normalised Cauchy matrix, see module docstring).
COEF: tuple[tuple[int, ...], ...] = tuple(
    tuple(gf_div(255 ^ j, (255 - i) ^ j) for j in range(MAX_K)) for i in range(MAX_M)
)


def _gf_invert(matrix: list[list[int]]) -> list[list[int]]:
    """Gauss-Jordan inverse of a small square matrix over GF(2^8)."""
    n = len(matrix)
    rows = [row[:] + [1 if c == r else 0 for c in range(n)] for r, row in enumerate(matrix)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if rows[r][col]), None)
        if pivot is None:  # impossible for Cauchy submatrices; kept as a guard
            raise FecError("singular decoding matrix")
        rows[col], rows[pivot] = rows[pivot], rows[col]
        scale = gf_inv(rows[col][col])
        pivot_row = [gf_mul(scale, v) for v in rows[col]]
        rows[col] = pivot_row
        for r in range(n):
            factor = rows[r][col]
            if r != col and factor:
                table = MUL[factor]
                rows[r] = [v ^ table[p] for v, p in zip(rows[r], pivot_row, strict=True)]
    return [row[n:] for row in rows]


# ------------------------------------------------------------- symbol codec


def _check_shape(k: int, m: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be 1..{MAX_K}, got {k}")
    if not 0 <= m <= MAX_M:
        raise ValueError(f"m must be 0..{MAX_M}, got {m}")


def rs_encode(symbols: Sequence[bytes], m: int) -> list[bytes]:
    """M repair symbols for K source symbols.

    Sources may differ in length; each is treated as zero-padded to the
    longest, which is the length of every repair symbol.
    """
    k = len(symbols)
    _check_shape(k, m)
    length = max(len(s) for s in symbols)
    repairs: list[bytes] = []
    if m == 0:
        return repairs
    acc = 0
    for symbol in symbols:  # row 0 is all ones: plain XOR
        acc ^= int.from_bytes(symbol, "little")
    repairs.append(acc.to_bytes(length, "little"))
    for i in range(1, m):
        row = COEF[i]
        acc = 0
        for j, symbol in enumerate(symbols):
            acc ^= int.from_bytes(symbol.translate(MUL[row[j]]), "little")
        repairs.append(acc.to_bytes(length, "little"))
    return repairs


def rs_recover(k: int, m: int, received: Mapping[int, bytes], length: int) -> dict[int, bytes]:
    """The missing source symbols, given at least K of the K + M symbols.

    ``received`` maps a symbol index to its bytes: ``0..k-1`` are sources
    (at most ``length`` bytes, implicitly zero-padded), ``k..k+m-1`` repairs
    (exactly ``length`` bytes). Returns ``{index: symbol}`` for every missing
    source, each ``length`` bytes long.

    Raises:
        FecError: fewer than K symbols, an index out of range, or a symbol of
            the wrong length.
    """
    _check_shape(k, m)
    for index, symbol in received.items():
        if not 0 <= index < k + m:
            raise FecError(f"symbol index {index} outside a block of {k}+{m}")
        if len(symbol) > length or (index >= k and len(symbol) != length):
            raise FecError(f"symbol {index} has {len(symbol)} bytes, block symbols have {length}")
    missing = [j for j in range(k) if j not in received]
    if not missing:
        return {}
    repairs = [i for i in range(m) if k + i in received][: len(missing)]
    if len(repairs) < len(missing):
        raise FecError(f"{len(received)} of {k}+{m} symbols cannot recover the block (need {k})")
    known = [j for j in range(k) if j in received]
    # Subtract the known sources from each chosen repair (row 0 is all ones: plain XOR), leaving
    # repair'_b = sum_{a missing} G[b][a] * S_a; then S_missing = inverse(G[R, missing]) * repair'.
    reduced: list[bytes] = []
    for r in repairs:
        acc = int.from_bytes(received[k + r], "little")
        if r == 0:
            for j in known:
                acc ^= int.from_bytes(received[j], "little")
        else:
            row = COEF[r]
            for j in known:
                acc ^= int.from_bytes(received[j].translate(MUL[row[j]]), "little")
        reduced.append(acc.to_bytes(length, "little"))
    inverse = _gf_invert([[COEF[r][j] for j in missing] for r in repairs])
    out: dict[int, bytes] = {}
    for a, target in enumerate(missing):
        acc = 0
        for c, symbol in zip(inverse[a], reduced, strict=True):
            if c == 1:
                acc ^= int.from_bytes(symbol, "little")
            elif c:
                acc ^= int.from_bytes(symbol.translate(MUL[c]), "little")
        out[target] = acc.to_bytes(length, "little")
    return out


def _source_symbol(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH_PREFIX, "big") + payload


def encode_repairs(payloads: Sequence[bytes], m: int) -> list[bytes]:
    """M repair symbols for a block of source payloads (each at most 65535 bytes)."""
    for payload in payloads:
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"source payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return rs_encode([_source_symbol(p) for p in payloads], m)


def recover_payloads(
    k: int, m: int, sources: Mapping[int, bytes], repairs: Mapping[int, bytes]
) -> dict[int, bytes]:
    """The missing source payloads of a block.

    ``sources`` maps a source index (0..k-1) to the payload received;
    ``repairs`` maps a repair index (0..m-1) to its symbol. Returns
    ``{source index: payload}`` for every source absent from ``sources``.

    Raises:
        FecError: not enough symbols, repair symbols of different lengths,
            a source too long for the block, or a recovered symbol whose
            length prefix or padding is impossible (the symbols do not
            belong together).
    """
    if not repairs:
        if len(sources) < k:
            raise FecError(f"{len(sources)} of {k}+{m} symbols cannot recover the block (need {k})")
        return {}
    lengths = {len(s) for s in repairs.values()}
    if len(lengths) != 1:
        raise FecError("repair symbols of one block differ in length")
    length = lengths.pop()
    if length < LENGTH_PREFIX:
        raise FecError("repair symbol shorter than the length prefix")
    received: dict[int, bytes] = {}
    for j, payload in sources.items():
        if len(payload) + LENGTH_PREFIX > length:
            raise FecError(f"source {j} ({len(payload)} bytes) is longer than the block's symbols")
        received[j] = _source_symbol(payload)
    for i, symbol in repairs.items():
        received[k + i] = symbol
    out: dict[int, bytes] = {}
    for j, symbol in rs_recover(k, m, received, length).items():
        size = int.from_bytes(symbol[:LENGTH_PREFIX], "big")
        end = LENGTH_PREFIX + size
        if end > length or len(symbol.rstrip(b"\x00")) > end:
            raise FecError(f"recovered source {j} is inconsistent with its block")
        out[j] = symbol[LENGTH_PREFIX:end]
    return out


# ---------------------------------------------------------------- wire format


@dataclass(frozen=True, slots=True)
class RepairSymbol:
    """One repair symbol and the block it belongs to: the body of a REPAIR frame.

    The block covers the K consecutive packet numbers ``first_pn ..
    first_pn + k - 1``; ``index`` (0..m-1) picks the row of the code.
    """

    block_id: int
    first_pn: int
    k: int
    m: int
    index: int
    symbol: bytes

    @property
    def last_pn(self) -> int:
        return self.first_pn + self.k - 1


def encode_repair_body(repair: RepairSymbol) -> bytes:
    """The REPAIR frame body: what follows the frame type and body length (docs/fec.md section 3)."""
    return b"".join(
        (
            encode_varint(repair.block_id),
            encode_varint(repair.first_pn),
            bytes((repair.k, repair.m, repair.index)),
            repair.symbol,
        )
    )


def parse_repair_body(body: bytes) -> RepairSymbol:
    """Parse a REPAIR frame body; the symbol is the rest of the body.

    Raises:
        FecError: truncated body or a field out of range.
    """
    if len(body) > MAX_REPAIR_BODY:
        raise FecError(f"REPAIR frame body of {len(body)} bytes exceeds {MAX_REPAIR_BODY}")
    reader = Reader(body)
    try:
        block_id = reader.pull_varint()
        first_pn = reader.pull_varint()
        k = reader.pull_uint8()
        m = reader.pull_uint8()
        index = reader.pull_uint8()
    except ParseError as exc:
        raise FecError(f"truncated REPAIR frame: {exc}") from exc
    symbol = reader.pull_rest()
    if not 1 <= k <= MAX_K:
        raise FecError(f"REPAIR block of {k} sources (allowed 1..{MAX_K})")
    if not 1 <= m <= MAX_M:
        raise FecError(f"REPAIR block of {m} repairs (allowed 1..{MAX_M})")
    if index >= m:
        raise FecError(f"REPAIR index {index} in a block of {m} repairs")
    if len(symbol) < LENGTH_PREFIX:
        raise FecError(f"repair symbol of {len(symbol)} bytes is shorter than the length prefix")
    if first_pn + k - 1 > VARINT_MAX:
        raise FecError("REPAIR block runs past the largest packet number")
    return RepairSymbol(block_id, first_pn, k, m, index, symbol)


def repair_frame_size(repair: RepairSymbol) -> int:
    """Bytes of the whole REPAIR frame: type (1), body length (varint), body."""
    body = varint_size(repair.block_id) + varint_size(repair.first_pn) + 3 + len(repair.symbol)
    return 1 + varint_size(body) + body


def max_source_payload(max_payload: int) -> int:
    """Largest source plaintext whose REPAIR frame still fits in ``max_payload`` bytes.

    Assumes the worst case, 8-byte varints for block id and first packet number.
    """
    fixed = 8 + 8 + 3 + LENGTH_PREFIX  # body bytes besides the payload
    payload = min(max_payload - 1 - 1 - fixed, MAX_REPAIR_BODY - fixed)
    while payload > 0 and 1 + varint_size(fixed + payload) + fixed + payload > max_payload:
        payload -= 1
    return max(0, payload)


# ------------------------------------------------------------------- policy

FecMode = Literal["off", "auto", "fixed"]


def binomial_tail(n: int, p: float, t: int) -> float:
    """P(X >= t) for X ~ Binomial(n, p): the chance that t or more of n symbols are lost."""
    if t <= 0:
        return 1.0
    if t > n:
        return 0.0
    q = 1.0 - p
    return math.fsum(math.comb(n, i) * p**i * q ** (n - i) for i in range(t, n + 1))


@dataclass(frozen=True, slots=True)
class FecPolicy:
    """How many repair symbols to send; an immutable setting shared by connections.

    ``off`` sends none. ``fixed`` sends ``m`` per block of ``k`` (and
    proportionally fewer, at least one, for a shorter block). ``auto`` picks,
    from the measured loss rate, the fewest repairs that keep the chance of an
    unrecoverable block under ``target_block_loss``, at most ``m`` and at most
    ``max_overhead`` of the block (always at least one), and none at all when
    the loss rate is under ``loss_on`` (or, once on, under ``loss_off``). The
    adaptive state lives in :class:`FecEncoder`.
    """

    mode: FecMode = "off"
    k: int = DEFAULT_K
    m: int = DEFAULT_AUTO_M
    target_block_loss: float = TARGET_BLOCK_LOSS
    max_overhead: float = MAX_OVERHEAD
    loss_on: float = LOSS_ON
    loss_off: float = LOSS_OFF

    def __post_init__(self) -> None:
        if self.mode not in ("off", "auto", "fixed"):
            raise ValueError(f"FEC mode must be 'off', 'auto' or 'fixed', got {self.mode!r}")
        if not 1 <= self.k <= MAX_K:
            raise ValueError(f"K (source packets per block) must be 1..{MAX_K}, got {self.k}")
        if not 1 <= self.m <= MAX_M:
            raise ValueError(f"M (repair packets per block) must be 1..{MAX_M}, got {self.m}")
        if not 0 < self.target_block_loss < 1:
            raise ValueError("target_block_loss must be between 0 and 1")
        if self.max_overhead <= 0:
            raise ValueError("max_overhead must be positive")
        if not 0 <= self.loss_off <= self.loss_on < 1:
            raise ValueError("need 0 <= loss_off <= loss_on < 1")

    def __str__(self) -> str:
        return f"{self.k},{self.m}" if self.mode == "fixed" else self.mode

    def repair_count(self, loss_rate: float, k: int | None = None, *, was_on: bool = False) -> int:
        """Repair symbols for a block of ``k`` sources (default ``self.k``) at ``loss_rate``.

        ``was_on`` says whether the previous decision sent repairs; it selects
        the ``loss_off`` rather than the ``loss_on`` threshold (hysteresis).
        """
        k = self.k if k is None else k
        if self.mode == "off":
            return 0
        if self.mode == "fixed":
            return max(1, -(-self.m * k // self.k))  # ceil(m * k / K)
        if loss_rate < (self.loss_off if was_on else self.loss_on):
            return 0
        cap = max(1, min(self.m, int(self.max_overhead * k + 1e-9)))
        for m in range(1, cap + 1):
            if binomial_tail(k + m, loss_rate, m + 1) <= self.target_block_loss:
                return m
        return cap


def parse_fec_spec(spec: str) -> FecPolicy:
    """``"off"``, ``"auto"`` or ``"K,M"`` (e.g. ``"10,2"``) as a :class:`FecPolicy`.

    Raises:
        ValueError: with a message that names the accepted forms or the bound broken.
    """
    text = spec.strip().lower()
    if text == "off":
        return FecPolicy("off")
    if text == "auto":
        return FecPolicy("auto")
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"fec must be 'off', 'auto' or 'K,M' (e.g. '10,2'), got {spec!r}")
    try:
        k, m = (int(part.strip(), 10) for part in parts)
    except ValueError:
        raise ValueError(f"fec {spec!r}: K and M must be whole numbers, as in '10,2'") from None
    if not 1 <= k <= MAX_K:
        raise ValueError(f"fec {spec!r}: K (source packets per block) must be 1..{MAX_K}")
    if m == 0:
        raise ValueError(f"fec {spec!r}: M is 0; use 'off' to send no repair packets")
    if not 1 <= m <= MAX_M:
        raise ValueError(f"fec {spec!r}: M (repair packets per block) must be 1..{MAX_M}")
    return FecPolicy("fixed", k, m)


class LossEstimator:
    """Exponentially weighted packet loss rate, updated per packet resolved (acked or lost)."""

    __slots__ = ("gain", "rate")

    def __init__(self, gain: float = LOSS_EWMA_GAIN) -> None:
        self.gain = gain
        self.rate = 0.0

    def on_sample(self, lost: int, sent: int) -> None:
        """``lost`` of ``sent`` packets were lost; equivalent to ``sent`` one-packet updates."""
        if sent <= 0:
            return
        lost = min(max(lost, 0), sent)
        weight = 1.0 - (1.0 - self.gain) ** sent
        self.rate += weight * (lost / sent - self.rate)


# ------------------------------------------------------------------ encoder


class _SentBlock:
    __slots__ = ("deferred", "first_pn", "k", "unresolved")

    def __init__(self, first_pn: int, k: int, unresolved: int) -> None:
        self.first_pn = first_pn
        self.k = k
        self.unresolved = unresolved  # repair symbols neither acked nor declared lost
        self.deferred: set[int] = set()  # protected packets declared lost, retransmission on hold


class FecEncoder:
    """Builds blocks from outgoing packets and queues their repair symbols.

    Feed every DATA packet except repair and CLOSE packets, in packet-number
    order, with :meth:`add` (after sealing, with the exact plaintext sealed).
    A block covers consecutive packet numbers: a gap closes the open block
    early, so a packet the encoder never saw cannot end up inside a block.
    An ack-eliciting packet may open a block; a non-ack-eliciting one only
    joins an open block. A block closes at K sources, on a gap, or on
    :meth:`flush`; closing it queues its repairs for :meth:`pop_repair`.

    Loss handling (docs/fec.md section 5): :meth:`defer_loss` holds back the
    retransmission of a protected packet until :meth:`on_ack_ranges` shows it
    recovered (a retransmission avoided) or :meth:`on_repair_resolved` shows
    every repair of its block acked or lost.

    ``max_source`` is the largest payload protected (see
    :func:`max_source_payload`): a longer one closes the open block and stays
    unprotected, so a repair frame always fits in a packet.
    """

    def __init__(self, policy: FecPolicy, *, max_source: int = MAX_SOURCE) -> None:
        self.policy = policy
        self.max_source = min(max_source, MAX_SOURCE)
        self.loss = LossEstimator()
        self._on = False  # hysteresis state of "auto"
        self._full_m = policy.repair_count(0.0)  # repairs for a full block at the current estimate
        self._next_block_id = 0
        self._open_first = 0
        self._open: list[bytes] = []
        self._queue: deque[RepairSymbol] = deque()
        self._blocks: dict[int, _SentBlock] = {}  # closed blocks whose repairs are not all resolved
        self._pn_block: dict[int, int] = {}  # packet number -> id of the closed block protecting it
        self._deferred: dict[int, int] = {}  # deferred packet number -> block id
        # counters
        self.blocks_encoded = 0
        self.repairs_sent = 0
        self.packets_deferred = 0
        self.retransmissions_avoided = 0

    # -- adaptive redundancy

    @property
    def loss_rate(self) -> float:
        return self.loss.rate

    @property
    def repair_count(self) -> int:
        """Repair symbols a full block would get now (0: FEC is idle)."""
        return self._full_m

    def on_loss_sample(self, lost: int, sent: int) -> None:
        """Of ``sent`` packets newly acknowledged or declared lost, ``lost`` were lost.

        Count raw network loss (as RFC 9002 declares it, recovered packets
        included), or FEC would hide the loss it repairs and switch itself off.
        """
        self.loss.on_sample(lost, sent)
        if self.policy.mode == "auto":
            self._full_m = self.policy.repair_count(self.loss.rate, was_on=self._on)
            self._on = self._full_m > 0

    # -- blocks

    @property
    def block_open(self) -> bool:
        return bool(self._open)

    def add(self, packet_number: int, payload: bytes, *, ack_eliciting: bool = True) -> None:
        """Offer the plaintext of a DATA packet just sealed as packet ``packet_number``."""
        if self._open and (
            packet_number != self._open_first + len(self._open) or len(payload) > self.max_source
        ):
            self.flush()
        if len(payload) > self.max_source:
            return
        if not self._open:
            if not ack_eliciting or self._full_m == 0 or len(self._blocks) >= MAX_SENT_BLOCKS:
                return
            self._open_first = packet_number
        self._open.append(payload)
        if len(self._open) >= self.policy.k:
            self.flush()

    def flush(self) -> None:
        """Close the open block now (the sender ran out of data, or a packet of it was lost)."""
        if not self._open:
            return
        payloads, first = self._open, self._open_first
        self._open = []
        m = self.policy.repair_count(self.loss.rate, len(payloads), was_on=self._on)
        if m == 0:
            return
        block_id = self._next_block_id
        self._next_block_id += 1
        k = len(payloads)
        for index, symbol in enumerate(encode_repairs(payloads, m)):
            self._queue.append(RepairSymbol(block_id, first, k, m, index, symbol))
        self._blocks[block_id] = _SentBlock(first, k, m)
        for pn in range(first, first + k):
            self._pn_block[pn] = block_id
        self.blocks_encoded += 1

    @property
    def has_repair(self) -> bool:
        return bool(self._queue)

    def pop_repair(self) -> RepairSymbol | None:
        """The next repair symbol to send (counted as sent), or None."""
        if not self._queue:
            return None
        self.repairs_sent += 1
        return self._queue.popleft()

    # -- loss and acknowledgement

    def hidden_losses(self, acked: Iterable[int], largest_acked_before: int) -> int:
        """Newly acknowledged protected packets that a later packet's ACK had overtaken.

        A source packet the peer rebuilt from repairs is acknowledged as received,
        usually before loss detection declares it lost, so it never reaches
        :meth:`on_loss_sample` as a loss: count it here (an ACK arriving after a
        later packet's is the trace it leaves; a merely reordered packet looks the
        same and counts too). Call before the ACK's repairs resolve their blocks.
        Each is also a retransmission avoided, as a deferred packet acknowledged
        later is (:meth:`on_ack_ranges`): without the repair, loss detection would
        have declared it lost and sent its frames again.
        """
        blocks = self._pn_block
        if not blocks:
            return 0  # nothing protected (FEC off or idle): the common case, on every ACK
        hidden = sum(1 for pn in acked if pn < largest_acked_before and pn in blocks)
        self.retransmissions_avoided += hidden
        return hidden

    def defer_loss(self, packet_number: int) -> bool:
        """Loss detection declared ``packet_number`` lost: should its retransmission wait?

        True if the packet is in a block whose repairs are not all resolved;
        the caller then keeps the packet's frames and retransmits them only if
        :meth:`on_repair_resolved` returns the packet number. A lost packet
        of the open block closes the block first, so its repairs go out now.
        """
        if self._open and self._open_first <= packet_number < self._open_first + len(self._open):
            self.flush()
        block_id = self._pn_block.get(packet_number)
        if block_id is None:
            return False
        if packet_number not in self._deferred:
            self._blocks[block_id].deferred.add(packet_number)
            self._deferred[packet_number] = block_id
            self.packets_deferred += 1
        return True

    def on_ack_ranges(self, ranges: Iterable[tuple[int, int]]) -> list[int]:
        """Deferred packets that the inclusive ``(smallest, largest)`` ranges acknowledge.

        Each is a retransmission avoided: the caller treats its frames as
        delivered. They are no longer deferred.
        """
        if not self._deferred:
            return []
        spans = list(ranges)
        hits = [pn for pn in self._deferred if any(lo <= pn <= hi for lo, hi in spans)]
        for pn in hits:
            self._blocks[self._deferred.pop(pn)].deferred.discard(pn)
        self.retransmissions_avoided += len(hits)
        return hits

    def on_repair_resolved(self, block_id: int) -> list[int]:
        """A repair packet of ``block_id`` was acknowledged or declared lost.

        Once every repair of the block is resolved, the block is forgotten and
        its still-deferred packets, which the peer could not recover, are
        returned for retransmission.
        """
        block = self._blocks.get(block_id)
        if block is None:
            return []
        block.unresolved -= 1
        if block.unresolved > 0:
            return []
        del self._blocks[block_id]
        for pn in range(block.first_pn, block.first_pn + block.k):
            if self._pn_block.get(pn) == block_id:
                del self._pn_block[pn]
        for pn in block.deferred:
            del self._deferred[pn]
        return sorted(block.deferred)

    @property
    def tracked_blocks(self) -> int:
        return len(self._blocks)


# ------------------------------------------------------------------ decoder


class _OpenBlock:
    __slots__ = ("first_pn", "k", "length", "m", "repairs")

    def __init__(self, repair: RepairSymbol) -> None:
        self.first_pn = repair.first_pn
        self.k = repair.k
        self.m = repair.m
        self.length = len(repair.symbol)
        self.repairs: dict[int, bytes] = {}

    def matches(self, repair: RepairSymbol) -> bool:
        return (self.first_pn, self.k, self.m, self.length) == (
            repair.first_pn,
            repair.k,
            repair.m,
            len(repair.symbol),
        )


Recovered = tuple[int, bytes]


class FecDecoder:
    """Recovers lost source packets from repair symbols, in bounded memory.

    Feed the plaintext of every authenticated DATA packet that carries no
    REPAIR frame to :meth:`receive_source`, and every REPAIR frame to
    :meth:`receive_repair` (or its body to :meth:`feed`), with the packet
    number of the packet that carried it. Both return the payloads recovered
    by that input as ``(packet_number, payload)`` pairs, which the caller
    processes as if those packets had arrived (after its replay check).

    Bounds: sources are kept for the last ``window`` packet numbers and only
    while the peer is sending REPAIR frames (a peer with FEC off costs
    nothing); at most ``max_blocks`` incomplete blocks; at most ``max_bytes``
    of sources and repair symbols together. The oldest block goes first and
    counts as abandoned.
    """

    def __init__(
        self,
        *,
        max_blocks: int = MAX_OPEN_BLOCKS,
        window: int = SOURCE_WINDOW,
        max_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self.max_blocks = max_blocks
        self.window = window
        self.max_bytes = max_bytes
        self._sources: dict[int, bytes] = {}  # packet number -> payload, in arrival order
        self._source_bytes = 0
        self._blocks: dict[int, _OpenBlock] = {}  # block id -> incomplete block, oldest first
        self._block_bytes = 0
        self._missing: dict[int, int] = {}  # packet number still missing -> block id waiting for it
        self._largest = -1
        self._engaged_until = -1
        # counters
        self.repairs_received = 0
        self.repairs_ignored = 0
        self.packets_recovered = 0
        self.blocks_recovered = 0
        self.blocks_abandoned = 0

    @property
    def open_blocks(self) -> int:
        return len(self._blocks)

    @property
    def buffered_bytes(self) -> int:
        return self._source_bytes + self._block_bytes

    @property
    def buffered_sources(self) -> int:
        return len(self._sources)

    def receive_source(self, packet_number: int, payload: bytes) -> list[Recovered]:
        """An authenticated source packet arrived (or was recovered elsewhere)."""
        if packet_number > self._largest:
            self._largest = packet_number
        if packet_number > self._engaged_until or packet_number < self._largest - self.window:
            if self._sources or self._blocks:  # else nothing to expire: the per-packet case with FEC off
                self._expire()
            return []
        if packet_number in self._sources:
            return []
        self._sources[packet_number] = payload
        self._source_bytes += len(payload)
        block_id = self._missing.pop(packet_number, None)
        try:
            return self._try_decode(block_id) if block_id is not None else []
        finally:
            self._expire()

    def feed(self, carrier_pn: int, body: bytes) -> list[Recovered]:
        """Parse a REPAIR frame body carried by packet ``carrier_pn`` and process it."""
        return self.receive_repair(carrier_pn, parse_repair_body(body))

    def receive_repair(self, carrier_pn: int, repair: RepairSymbol) -> list[Recovered]:
        """A REPAIR frame arrived in authenticated packet ``carrier_pn``.

        Raises:
            FecError: the block covers ``carrier_pn`` or later packets, it
                disagrees with an earlier REPAIR of the same block, or its
                symbols turn out inconsistent (the block is dropped).
        """
        self.repairs_received += 1
        if repair.last_pn >= carrier_pn:
            raise FecError(f"REPAIR in packet {carrier_pn} covers packets up to {repair.last_pn}")
        if carrier_pn > self._largest:
            self._largest = carrier_pn
        self._engaged_until = max(self._engaged_until, carrier_pn + ENGAGE_SPAN)
        try:
            return self._add_repair(repair)
        finally:
            self._expire()

    def _add_repair(self, repair: RepairSymbol) -> list[Recovered]:
        if repair.first_pn < self._largest - self.window:
            self.repairs_ignored += 1  # too old: its sources may be gone
            return []
        block = self._blocks.get(repair.block_id)
        if block is None:
            first = repair.first_pn
            sources = self._sources
            missing = [pn for pn in range(first, first + repair.k) if pn not in sources]
            if not missing:
                self.repairs_ignored += 1  # nothing lost (the common case)
                return []
            block = _OpenBlock(repair)
            self._blocks[repair.block_id] = block
            for pn in missing:
                self._missing[pn] = repair.block_id
        elif not block.matches(repair):
            self._drop_block(repair.block_id)
            raise FecError(f"REPAIR disagrees with an earlier REPAIR of block {repair.block_id}")
        if repair.index in block.repairs:
            self.repairs_ignored += 1
            return []
        block.repairs[repair.index] = repair.symbol
        self._block_bytes += len(repair.symbol)
        return self._try_decode(repair.block_id)

    def _try_decode(self, block_id: int) -> list[Recovered]:
        block = self._blocks[block_id]
        first = block.first_pn
        present = {
            j: payload for j in range(block.k) if (payload := self._sources.get(first + j)) is not None
        }
        if len(present) == block.k:
            self._drop_block(block_id)
            return []
        if len(present) + len(block.repairs) < block.k:
            return []
        self._drop_block(block_id)
        recovered = recover_payloads(block.k, block.m, present, block.repairs)
        out: list[Recovered] = []
        for j, payload in sorted(recovered.items()):
            pn = first + j
            out.append((pn, payload))
            if pn not in self._sources:  # keep it, so a late REPAIR of this block finds nothing missing
                self._sources[pn] = payload
                self._source_bytes += len(payload)
        self.packets_recovered += len(out)
        self.blocks_recovered += 1
        return out

    def _drop_block(self, block_id: int) -> None:
        block = self._blocks.pop(block_id)
        self._block_bytes -= sum(len(s) for s in block.repairs.values())
        for pn in range(block.first_pn, block.first_pn + block.k):
            if self._missing.get(pn) == block_id:
                del self._missing[pn]

    def _expire(self) -> None:
        floor = self._largest - self.window
        blocks = self._blocks
        sources = self._sources
        while blocks:
            block_id, block = next(iter(blocks.items()))
            if len(blocks) <= self.max_blocks and block.first_pn >= floor:
                break
            self._abandon(block_id)
        while sources:
            pn = next(iter(sources))
            if pn >= floor and len(sources) <= self.window:
                break
            self._source_bytes -= len(sources.pop(pn))
        # Over the byte budget, repairs may keep half of it while sources need the rest.
        while self.buffered_bytes > self.max_bytes:
            if blocks and (self._block_bytes > self.max_bytes // 2 or not sources):
                self._abandon(next(iter(blocks)))
            else:
                self._source_bytes -= len(sources.pop(next(iter(sources))))

    def _abandon(self, block_id: int) -> None:
        self._drop_block(block_id)
        self.blocks_abandoned += 1
