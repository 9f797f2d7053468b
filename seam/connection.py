"""The sans-IO Seam connection.

Theory of operation
-------------------
A :class:`Connection` is fed datagrams (``receive_datagram``) and time
(``handle_timer``), and is drained of datagrams (``datagrams_to_send``) and
events (``next_event``). It never touches a socket or a clock.

Lifecycle: a client starts in ``HELLO`` (sending HELLO until RETRY), moves to
``HANDSHAKE`` (msg1 until msg2, then msg3), and is ``ESTABLISHED`` once msg3
is written; it repeats msg3 until any DATA from the server arrives. A server
connection is created by :class:`seam.admission.Admission` from a
cookie-validated msg1, answers with msg2 and becomes ``ESTABLISHED`` on msg3.
``close()`` moves to ``CLOSING`` (the CLOSE frame is sent once, in two
packets), then ``CLOSED``; a peer CLOSE, the idle timeout or a protocol error
move straight to ``CLOSED``. After ``CLOSED`` nothing is ever sent again.

Receive rule: nothing a datagram says changes any state until its AEAD tag
has been verified (handshake datagrams are authenticated by the handshake
itself: a forged fragment can only fail the handshake AEAD, which is
counted and otherwise ignored).

Every peer-growable structure is bounded: reassembly by the flow-control
windows, streams by ``max_concurrent_streams``, datagrams by
``datagram_queue_size``, handshake fragments by the message length limit,
ACK ranges by ``MAX_TRACKED_RANGES``, FEC blocks by :class:`seam.fec.FecDecoder`.

Forward error correction (docs/fec.md): the plaintext of every DATA packet we
seal (except repair and CLOSE packets) is offered to a :class:`FecEncoder`,
whose repair symbols go out in their own packets as REPAIR frames. A lost
packet that a block protects is *parked* instead of retransmitted, until an
ACK shows the peer recovered it or every repair of its block is resolved.
The receiver feeds every source packet and REPAIR frame to a
:class:`FecDecoder` and processes what it recovers as if it had arrived.
Congestion control sees every loss exactly as without FEC.
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from seam import fec
from seam import packet as pk
from seam.buffer import varint_size
from seam.config import SeamConfig
from seam.congestion import create as create_congestion
from seam.crypto import Cipher, PacketProtection, ReplayWindow, accepted_ciphers
from seam.ecn import Codepoint
from seam.errors import (
    CryptoError,
    ErrorCode,
    HandshakeError,
    LocalProtocolError,
    ParseError,
    RemoteProtocolError,
)
from seam.events import (
    ConnectionTerminated,
    DatagramReceived,
    Event,
    HandshakeCompleted,
    PathMigrated,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from seam.handshake import ClientHandshake, HandshakeResult, ServerHandshake
from seam.identity import Identity, PublicKeys
from seam.pacing import Pacer, pacing_rate_for
from seam.pmtud import PathMtuSearch
from seam.rangeset import RangeSet
from seam.recovery import LossRecovery, SentPacket
from seam.stream import FlowControlWindow, ReceiveStream, SendCredit, SendStream

Address = tuple[str, int]
logger = logging.getLogger("seam.connection")

HANDSHAKE_RETRANSMIT_INITIAL = 0.5  # seconds, doubled per retry, docs/protocol.md section 2
HANDSHAKE_RETRANSMIT_MAX = 1.0  # seconds: 2 s let 1 % of handshakes on profile (d) take over 5.5 s
MAX_MSG1_ANSWERS = 3  # server: differing msg1s (damaged copies) answered and kept per connection
BLACK_HOLE_LOSSES = 10  # packets above the base size lost in a row, smaller ones acknowledged
MAX_TRACKED_RANGES = 64  # received-packet ranges kept for ACK frames
MAX_ACK_RANGES_SENT = 32
ACK_ELICITING_THRESHOLD = 2  # RFC 9000 13.2.2: ack at least every second ack-eliciting packet
# ACK decimation (as Google QUIC's): past the first packets, ack every 4th ack-eliciting packet
# or after a quarter of the minimum RTT, and at once when one arrives out of order.
ACK_DECIMATION_AFTER = 100  # ack-eliciting packets received before decimating
ACK_DECIMATION_PACKETS = 4  # 10 cost BBR 3 % more of a lossy link in the sans-IO pair than 4 did
ACK_DECIMATION_RTT_FRACTION = 0.25
MAX_PACKET_NUMBER = (1 << 62) - 1  # docs/protocol.md 6.1: close before nonces could wrap
PATH_CHALLENGE_ATTEMPTS = 3
TLP_TAIL_SEARCH = 4  # newest packets in flight a data-less probe looks through for stream data to resend
AMPLIFICATION_FACTOR = 3  # RFC 9000 8.1: at most 3x the bytes received on an unvalidated path
# DATA packet layout (docs/protocol.md 6), as plain ints for the per-packet receive path
_DATA_PHASE0 = pk.PacketType.DATA_PHASE0.value
_DATA_PHASE1 = pk.PacketType.DATA_PHASE1.value
_PN_START = 1 + pk.CID_LEN  # the packet number follows the type byte and the destination CID
_DATA_OVERHEAD = pk.DATA_HEADER_LEN + pk.AEAD_TAG_LEN  # bytes of a DATA packet around its frames
MAX_PENDING_CONTROL = 4096  # queued control frames; a peer cannot grow this past it


class State(enum.Enum):
    HELLO = "hello"
    HANDSHAKE = "handshake"
    ESTABLISHED = "established"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(slots=True)
class ConnectionStats:
    """A snapshot of counters; ``dropped`` maps a drop reason to a count."""

    smoothed_rtt: float
    min_rtt: float
    congestion_window: int
    bytes_in_flight: int
    bytes_sent: int
    bytes_received: int
    packets_sent: int
    packets_received: int
    packets_lost: int
    packets_retransmitted: int
    streams_open: int
    key_generation: int
    dropped: dict[str, int] = field(default_factory=dict)
    fec_repairs_sent: int = 0  # REPAIR frames we sent
    fec_repairs_received: int = 0  # REPAIR frames in authenticated packets from the peer
    fec_packets_recovered: int = 0  # lost packets rebuilt from repairs and processed
    fec_retransmissions_avoided: int = 0  # our lost packets the peer recovered: not retransmitted
    fec_blocks_abandoned: int = 0  # incomplete blocks the decoder dropped to stay in bounds
    fec_loss_rate: float = 0.0  # our EWMA of raw packet loss (drives fec="auto")
    fec_repair_count: int = 0  # repairs a full block of ours gets now (0: FEC idle)
    packets_spuriously_lost: int = 0  # declared lost, then acknowledged after all (reordering)
    datagram_size: int = 0  # bytes of UDP payload per full packet now (grows with PMTU discovery)
    pmtu_search: str = "disabled"  # path MTU discovery: "searching", "complete" or "disabled"
    congestion_phase: str = ""  # the controller's state now (BBR: startup ... probe_rtt)
    ecn_state: str = ""  # our marking: testing, unknown, capable or failed (docs/protocol.md 7.6)
    ecn_failure: str = ""  # why it failed, if it did
    ecn_ce_marks: int = 0  # CE marks the peer reported on our packets (validated ACKs only)
    ecn_ce_received: int = 0  # CE-marked packets we received from the peer
    ecn_ect0_received: int = 0  # ECT(0)-marked packets we received from the peer


class _StreamState:
    __slots__ = ("peer_max_data", "recv", "send", "stream_id")

    def __init__(self, stream_id: int, config: SeamConfig) -> None:
        self.stream_id = stream_id
        self.send = SendStream(stream_id, max_buffer=config.stream_send_buffer)
        # A stream that is read as fast as it arrives may widen its window up to the whole
        # connection's (ReceiveStream.on_consumed), which still bounds what a peer can make us hold.
        self.recv = ReceiveStream(
            stream_id, window=config.stream_receive_window, max_window=config.connection_receive_window
        )
        self.peer_max_data = config.stream_receive_window  # both ends use the same initial window


@dataclass(slots=True)
class _Msg1Answer:
    """Server: one msg1 we answered, its handshake state and its msg2 flight."""

    message1: bytes
    handshake: ServerHandshake
    flight: list[bytes]
    sent_at: float  # when the msg2 flight first left
    sends: int = 1  # how often it left: a round-trip sample only from a flight sent once


class _Reassembly:
    """Reassembles one handshake message from fragments, bounded by its declared length."""

    __slots__ = ("buffer", "have", "total")

    def __init__(self, total: int) -> None:
        self._start(total)

    def _start(self, total: int) -> None:
        self.total = total
        self.buffer = bytearray(total)
        self.have = RangeSet()

    def add(self, frag: pk.HandshakeFragment) -> bytes | None:
        """Take one fragment; the whole message once every byte is in.

        A fragment declaring another length starts the message over (callers count
        it): fragments carry no authentication, so one of the two was damaged in
        flight, and holding on to the first would refuse every later, good, fragment
        for good. A message put together from a damaged fragment fails the
        handshake's checks, and the peer's retransmission brings it again.
        """
        if frag.total_len != self.total:
            self._start(frag.total_len)
        offset, data = frag.offset, frag.data
        self.buffer[offset : offset + len(data)] = data
        self.have.add(offset, offset + len(data))
        if len(self.have) == 1 and self.have.bounds() == (0, self.total):
            return bytes(self.buffer)
        return None


class Connection:
    """One end of a Seam connection. See the module docstring."""

    def __init__(
        self,
        *,
        is_client: bool,
        config: SeamConfig,
        identity: Identity,
        local_cid: bytes,
        remote_cid: bytes,
        peer_address: Address,
        now: float,
        rng: random.Random | None = None,
    ) -> None:
        self.is_client = is_client
        self.config = config
        self.identity = identity
        self.local_cid = local_cid
        self.remote_cid = remote_cid
        self.peer_address = peer_address
        self.state = State.HELLO if is_client else State.HANDSHAKE
        self._rng = rng or random.Random()
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Address]] = []
        self._created = now
        # Datagram size: starts at max_datagram_size, grows as path MTU discovery allows (seam.pmtud)
        self._datagram_size = config.max_datagram_size
        self._max_payload = config.max_datagram_size - _DATA_OVERHEAD
        self._pmtu = PathMtuSearch(config.max_datagram_size, config.pmtu_ceiling)
        self._persistent_congestion_seen = 0

        # handshake
        self._cookie = b""
        self._client_hs: ClientHandshake | None = None
        self._answers: list[_Msg1Answer] = []  # server: the msg1s answered so far, newest last
        self._hs_flight: list[bytes] = []
        self._hs_retransmit_at: float | None = None
        self._hs_backoff = HANDSHAKE_RETRANSMIT_INITIAL
        self._hs_deadline = now + config.handshake_timeout
        self._hs_reassembly: dict[int, _Reassembly] = {}
        self._awaiting_server_data = False
        self._msg2_progress = False  # client: a msg2 fragment arrived since the last retransmission
        self._msg1_sent_at = 0.0  # client: when the current msg1 first left
        self._msg1_sends = 0  # and how often: a round-trip sample only from a msg1 sent once
        self.peer_x25519: bytes | None = None
        self.handshake_hash: bytes | None = None

        # packet protection
        self._tx: PacketProtection | None = None
        self._tx_generation = 0
        self._tx_generation_packets = 0
        self._tx_generation_started = now
        self._rx: PacketProtection | None = None
        self._rx_next: PacketProtection | None = None
        self._rx_previous: PacketProtection | None = None
        self._rx_previous_until = 0.0
        self._rx_generation = 0
        self._rx_generation_first_pn = 0
        self._replay = ReplayWindow()
        self._next_pn = 0

        # acknowledgements
        self._received = RangeSet()
        self._ecn_received = [0, 0, 0, 0]  # authenticated DATA packets per IP ECN codepoint
        self._ecn_marking = False  # the current batch goes ECT(0) (docs/protocol.md 7.6)
        self._largest_received_time = 0.0
        self._ack_eliciting_unacked = 0
        self._ack_deadline: float | None = None
        self._ack_eliciting_received = 0
        self._ack_threshold = ACK_ELICITING_THRESHOLD

        # recovery, congestion and pacing
        congestion = create_congestion(config.congestion, max_datagram_size=config.max_datagram_size)
        congestion.use_rng(self._rng)
        self._recovery = LossRecovery(
            congestion=congestion,
            max_ack_delay=config.max_ack_delay,
            initial_rtt=config.initial_rtt,
        )
        self._probes_owed = 0
        self._pacer = Pacer(max_datagram_size=config.max_datagram_size)
        self._pace_at: float | None = None  # when the pacer lets the next packet go, if it held one back

        # streams and flow control
        self._streams: dict[int, _StreamState] = {}
        self._send_ready: deque[int] = deque()
        self._send_ready_set: set[int] = set()
        self._next_local_stream_index = 0
        self._peer_stream_limit = config.max_concurrent_streams  # streams we may open
        self._local_stream_limit = config.max_concurrent_streams  # streams the peer may open
        self._local_stream_limit_sent = config.max_concurrent_streams
        self._peer_streams_closed = 0
        self._highest_peer_stream_index = -1
        self._conn_credit = SendCredit(config.connection_receive_window)
        self._conn_window = FlowControlWindow(config.connection_receive_window)
        self._control: deque[tuple[Any, ...]] = deque()
        self._datagrams_out: deque[bytes] = deque()

        # path and liveness
        self._last_received = now
        self._last_ack_eliciting_sent = now
        self._path_validated = True
        self._path_previous: Address | None = None
        self._path_challenge: bytes | None = None
        self._path_challenge_deadline: float | None = None
        self._path_challenge_attempts = 0
        self._path_bytes_received = 0
        self._path_bytes_sent = 0
        self._path_responses: deque[bytes] = deque(maxlen=4)
        self._largest_authenticated_pn = -1

        # closing
        self._close_frame: bytes | None = None
        self._handshake_done_pending = False
        self._peer_confirmed = False

        # forward error correction (docs/fec.md section 9.3)
        self._fec_policy = fec.parse_fec_spec(config.fec)
        self._fec_max_source = fec.max_source_payload(self._max_payload)
        self._max_datagram_payload = self._datagram_room()
        self._big_lost_in_row = 0  # packets above the base size lost since one was acknowledged
        self._fec_tx = fec.FecEncoder(self._fec_policy, max_source=self._fec_max_source)
        self._fec_rx = fec.FecDecoder()
        self._fec_deferred: dict[int, SentPacket] = {}  # lost, protected: retransmission on hold
        self._fec_recovered = 0

        # counters
        self._bytes_sent = 0
        self._bytes_received = 0
        self._packets_sent = 0
        self._packets_received = 0
        self._packets_retransmitted = 0
        self._dropped: dict[str, int] = {}

    # ------------------------------------------------------------ constructors

    @classmethod
    def connect(
        cls,
        *,
        identity: Identity,
        server_keys: PublicKeys,
        peer_address: Address,
        config: SeamConfig,
        now: float,
        rng: random.Random | None = None,
    ) -> Connection:
        """A client connection; its first datagram (HELLO) is ready at once."""
        conn = cls(
            is_client=True,
            config=config,
            identity=identity,
            local_cid=os.urandom(pk.CID_LEN),
            remote_cid=os.urandom(pk.CID_LEN),
            peer_address=peer_address,
            now=now,
            rng=rng,
        )
        conn._server_keys = server_keys
        conn._hs_flight = [pk.encode_hello(conn.remote_cid, conn.local_cid)]
        conn._hs_retransmit_at = now  # send at once
        return conn

    @classmethod
    def accept(
        cls,
        *,
        identity: Identity,
        config: SeamConfig,
        local_cid: bytes,
        remote_cid: bytes,
        peer_address: Address,
        message1: bytes,
        now: float,
        rng: random.Random | None = None,
    ) -> Connection:
        """A server connection for a cookie-validated, fully reassembled msg1.

        Raises :class:`HandshakeError` if msg1 is invalid; the caller counts
        that as a refusal and keeps no state.
        """
        conn = cls(
            is_client=False,
            config=config,
            identity=identity,
            local_cid=local_cid,
            remote_cid=remote_cid,
            peer_address=peer_address,
            now=now,
            rng=rng,
        )
        conn._answer_msg1(message1, now)
        return conn

    _server_keys: PublicKeys

    def _prologue(self) -> bytes:
        client_cid, server_cid = (
            (self.local_cid, self.remote_cid) if self.is_client else (self.remote_cid, self.local_cid)
        )
        return b"seam/1" + pk.VERSION.to_bytes(4, "big") + client_cid + server_cid

    # ------------------------------------------------------------- public API

    @property
    def is_established(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def is_closed(self) -> bool:
        return self.state is State.CLOSED

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> Iterator[Event]:
        while self._events:
            yield self._events.popleft()

    def stats(self) -> ConnectionStats:
        rtt = self._recovery.rtt
        return ConnectionStats(
            smoothed_rtt=rtt.smoothed_rtt,
            min_rtt=rtt.min_rtt if rtt.has_sample else 0.0,
            congestion_window=self._recovery.congestion.congestion_window,
            bytes_in_flight=self._recovery.bytes_in_flight,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            packets_sent=self._packets_sent,
            packets_received=self._packets_received,
            packets_lost=self._recovery.packets_lost,
            packets_spuriously_lost=self._recovery.packets_spuriously_lost,
            datagram_size=self._datagram_size,
            pmtu_search=self._pmtu.state.value,
            packets_retransmitted=self._packets_retransmitted,
            streams_open=len(self._streams),
            key_generation=self._tx_generation,
            dropped=dict(self._dropped),
            fec_repairs_sent=self._fec_tx.repairs_sent,
            fec_repairs_received=self._fec_rx.repairs_received,
            fec_packets_recovered=self._fec_recovered,
            fec_retransmissions_avoided=self._fec_tx.retransmissions_avoided,
            fec_blocks_abandoned=self._fec_rx.blocks_abandoned,
            fec_loss_rate=self._fec_tx.loss_rate,
            fec_repair_count=self._fec_tx.repair_count,
            congestion_phase=self._recovery.congestion.phase,
            ecn_state=self._recovery.ecn.state.value,
            ecn_failure=self._recovery.ecn.failure,
            ecn_ce_marks=self._recovery.ecn.ce_marks,
            ecn_ce_received=self._ecn_received[Codepoint.CE],
            ecn_ect0_received=self._ecn_received[Codepoint.ECT0],
        )

    def count_drop(self, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1

    @property
    def ecn_codepoint(self) -> int:
        """The IP ECN codepoint for the datagrams the last ``datagrams_to_send`` returned.

        One value per connection and batch (docs/protocol.md 7.6): the I/O
        layer reads it right after ``datagrams_to_send`` and sets it on every
        datagram of that batch. ECT(0) only for a batch of DATA packets while
        validation allows marking: never with a handshake datagram in it, so
        a path that drops ECT packets cannot stop a handshake.
        """
        return Codepoint.ECT0 if self._ecn_marking else Codepoint.NOT_ECT

    def disable_ecn(self, reason: str = "disabled by the I/O layer") -> None:
        """Never mark our packets ECT: for an I/O layer that cannot set the codepoint.

        Receiving is unaffected: the codepoints the I/O layer reports are still counted.
        """
        self._recovery.ecn.disable(reason)

    # streams

    def can_open_stream(self) -> bool:
        return self._next_local_stream_index < self._peer_stream_limit

    def open_stream(self) -> int:
        """Allocate a new locally initiated stream id (no frame is sent until data or FIN)."""
        if self.state is not State.ESTABLISHED:
            raise LocalProtocolError("connection is not established")
        if not self.can_open_stream():
            raise LocalProtocolError("peer's stream limit reached")
        stream_id = self._next_local_stream_index * 2 + (0 if self.is_client else 1)
        self._next_local_stream_index += 1
        self._streams[stream_id] = _StreamState(stream_id, self.config)
        return stream_id

    def stream_send_capacity(self, stream_id: int) -> int:
        stream = self._streams.get(stream_id)
        if stream is None or stream.send.is_reset:
            return 0
        return stream.send.capacity_for(self._recovery.congestion.congestion_window)

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        if data:
            stream.send.write(data)
        if end_stream:
            stream.send.finish()
        self._mark_send_ready(stream_id)

    def stream_data_consumed(self, stream_id: int, nbytes: int, now: float | None = None) -> bool:
        """The application took ``nbytes`` delivered bytes: re-open flow-control credit.

        ``now`` (default: when the last packet arrived) lets a stream read as fast as it
        arrives widen its window. Returns True when a window update was queued, i.e. when
        the caller should run its transmit step soon.
        """
        updated = False
        if self._conn_window.on_consumed(nbytes) is not None:
            self._queue_control(("max_data",))
            updated = True
        stream = self._streams.get(stream_id)
        when = self._last_received if now is None else now
        if (
            stream is not None
            and stream.recv.on_consumed(nbytes, when, self._recovery.rtt.smoothed_rtt) is not None
        ):
            self._queue_control(("max_stream_data", stream_id))
            updated = True
        return updated

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.send.is_reset or stream.send.all_acked:
            return
        final_size = stream.send.reset(error_code)
        self._queue_control(("reset", stream_id, error_code, final_size))
        self._maybe_discard_stream(stream)

    def stop_sending(self, stream_id: int, error_code: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.recv.is_finished:
            return
        self._queue_control(("stop", stream_id, error_code))

    def send_datagram(self, data: bytes) -> bool:
        """Queue an unreliable datagram; returns False (and counts it) if the queue is full."""
        if len(data) > self.max_datagram_payload:
            raise LocalProtocolError(
                f"datagram of {len(data)} bytes exceeds the maximum of {self.max_datagram_payload}"
            )
        if len(self._datagrams_out) >= self.config.datagram_queue_size:
            self.count_drop("datagram-queue-full")
            return False
        self._datagrams_out.append(data)
        return True

    @property
    def max_datagram_payload(self) -> int:
        """Largest ``send_datagram`` payload now; with FEC on, small enough for a protected packet.

        It follows the packet size path MTU discovery settles on (docs/protocol.md
        7.5), so it grows once the search finds a bigger path and may shrink again
        if the path does; it never depends on the current repair count.
        """
        return self._max_datagram_payload

    def _datagram_room(self) -> int:
        """The largest DATAGRAM frame payload that fits one packet at the current size."""
        room = self._max_payload if self._fec_policy.mode == "off" else self._fec_max_source
        return room - 1 - varint_size(room)

    def close(self, error_code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Start closing: a CLOSE frame goes out with the next ``datagrams_to_send``."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        if self._tx is None:
            self._terminate(error_code, reason or "closed during handshake", by_peer=False)
            return
        self.state = State.CLOSING
        self._close_frame = pk.encode_close(error_code, reason)
        self._close_info = (error_code, reason)

    _close_info: tuple[int, str] = (0, "")

    # ---------------------------------------------------------------- receive

    def receive_datagram(self, data: bytes, addr: Address, now: float, *, ecn: int = 0) -> None:
        """Process one datagram. Never raises: bad input is dropped and counted.

        ``ecn`` is the IP ECN codepoint it arrived with (0, Not-ECT, when the
        I/O layer cannot tell); only authenticated DATA packets count it.
        """
        if self.state is State.CLOSED:
            return
        kind = data[0] if data else -1
        if kind == _DATA_PHASE0 or kind == _DATA_PHASE1:
            # The per-packet case, decoded here rather than through parse_header's dataclass.
            if len(data) < _DATA_OVERHEAD:
                self.count_drop("malformed")
                return
            try:
                self._receive_data(kind & 1, data, addr, now, ecn & 3)
            except RemoteProtocolError as exc:
                self._fail(exc.code, str(exc))
            except Exception as exc:  # a bug of ours: end this connection, never the endpoint
                self._internal_error(exc)
            return
        try:
            header = pk.parse_header(data)
        except ParseError:
            self.count_drop("malformed")
            return
        try:
            if isinstance(header, pk.HandshakeFragment):
                self._receive_handshake(header, addr, now)
            elif isinstance(header, pk.Retry):
                self._receive_retry(header, now)
            else:
                self.count_drop("unexpected-hello")
        except RemoteProtocolError as exc:
            self._fail(exc.code, str(exc))
        except HandshakeError as failed:  # not exc: compiled, exc keeps its first type
            self._handshake_failed(failed)
        except Exception as exc:  # a bug of ours: end this connection, never the endpoint
            self._internal_error(exc)

    def _internal_error(self, exc: Exception) -> None:
        logger.exception("internal error while processing a datagram")
        self.count_drop("internal-error")
        self._terminate(ErrorCode.INTERNAL_ERROR, f"internal error: {exc!r}", by_peer=False)

    def _receive_retry(self, header: pk.Retry, now: float) -> None:
        awaiting_msg2 = self._msg1_unanswered()
        if header.dcid != self.local_cid or not (self.state is State.HELLO or awaiting_msg2):
            self.count_drop("unexpected-retry")
            return
        if awaiting_msg2 and header.cookie == self._cookie and header.scid == self.remote_cid:
            return  # the same RETRY again
        self.remote_cid = header.scid
        self._cookie = header.cookie
        self._hs_reassembly.clear()
        hs = ClientHandshake(
            self.identity,
            self._server_keys,
            prologue=self._prologue(),
            cipher=Cipher.from_name(self.config.cipher),
        )
        self._client_hs = hs
        body = hs.write_message1()
        self._hs_flight = pk.encode_handshake_message(self.remote_cid, self.local_cid, self._cookie, 1, body)
        self.state = State.HANDSHAKE
        self._msg1_sends = 0
        self._hs_backoff = HANDSHAKE_RETRANSMIT_INITIAL
        self._hs_retransmit_at = now  # send msg1 at once

    def _msg1_unanswered(self) -> bool:
        """Client: msg1 sent, and no msg2 accepted yet.

        Fragments of a msg2 may have come and stopped (a reply to an earlier msg1,
        or the rest lost); they do not count, or a damaged cookie would never be
        replaced (the relay drops every msg1 that carries it).
        """
        return self.is_client and self.state is State.HANDSHAKE and self._tx is None

    def _reassemble(self, frag: pk.HandshakeFragment) -> bytes | None:
        held = self._hs_reassembly.get(frag.message)
        if held is None:
            held = self._hs_reassembly[frag.message] = _Reassembly(frag.total_len)
        elif held.total != frag.total_len:
            self.count_drop("handshake-fragment-mismatch")
        return held.add(frag)

    def _receive_handshake(self, frag: pk.HandshakeFragment, addr: Address, now: float) -> None:
        if frag.dcid != self.local_cid:
            self.count_drop("unknown-cid")
            return
        if self.is_client:
            if frag.message != 2 or self.state is not State.HANDSHAKE or self._client_hs is None:
                self.count_drop("unexpected-handshake")
                return
            message = self._reassemble(frag)
            self._msg2_progress = True  # a reply is coming: keep the cookie for now
            if message is None:
                return
            del self._hs_reassembly[2]
            hs = self._client_hs
            try:
                hs.read_message2(message)
            except HandshakeError as exc:
                if exc.reason in ("authentication", "refused"):
                    raise  # the relay is not the one we pinned: final
                # Damaged or forged: the state rolled back; wait for the real msg2.
                self.count_drop("handshake-rejected")
                return
            if self._msg1_sends == 1:
                self._handshake_rtt_sample(now - self._msg1_sent_at)
            body = hs.write_message3()
            self._hs_flight = pk.encode_handshake_message(
                self.remote_cid, self.local_cid, self._cookie, 3, body
            )
            self._hs_backoff = HANDSHAKE_RETRANSMIT_INITIAL
            self._hs_retransmit_at = now
            self._install_keys(hs.result, now)
            self._awaiting_server_data = True
            return
        # server
        if frag.message == 1:
            if self.state is State.HANDSHAKE and self._answers:
                message = self._reassemble(frag)
                if message is not None:
                    del self._hs_reassembly[1]
                    self._repeat_msg1(message, now)
            return
        if frag.message != 3:
            self.count_drop("unexpected-handshake")
            return
        if self.state is not State.HANDSHAKE:
            # msg3 repeated: the client has not heard from us yet.
            self._handshake_done_pending = True
            return
        message = self._reassemble(frag)
        if message is None or not self._answers:
            return
        del self._hs_reassembly[3]
        for answer in reversed(self._answers):  # the newest msg1 is the likeliest to be the client's
            try:
                result = answer.handshake.read_message3(message)
                # Sent once, and answered before the client's first msg3 retransmission could
                # have been: a later msg3 may be a repeat, whose sample would hold that timer.
                if answer.sends == 1 and now - answer.sent_at < HANDSHAKE_RETRANSMIT_INITIAL:
                    self._handshake_rtt_sample(now - answer.sent_at)
                break
            except HandshakeError:
                continue  # rolled back
        else:
            self.count_drop("handshake-rejected")  # the client repeats msg3
            return
        self._answers = []
        self._install_keys(result, now)
        self._handshake_done_pending = True
        self._peer_confirmed = True

    def _repeat_msg1(self, message: bytes, now: float) -> None:
        """The client sent msg1 again: it did not hear (or could not use) our msg2.

        A msg1 we answered gets the same msg2 again. A different one means one
        of the two was damaged in transit (msg1 carries no authentication, and
        damage can leave it well-formed), and we cannot tell which: answer this
        one too, and keep both, so whichever the client really sent completes
        with its msg3 (up to ``MAX_MSG1_ANSWERS``; a msg1 that does not parse
        changes nothing).
        """
        for answer in self._answers:
            if answer.message1 == message:
                self._out.extend((d, self.peer_address) for d in answer.flight)
                answer.sends += 1
                return
        try:
            self._answer_msg1(message, now)
        except HandshakeError:
            self.count_drop("handshake-rejected")

    def _answer_msg1(self, message: bytes, now: float) -> None:
        """Read a msg1 and send its msg2 (raises :class:`HandshakeError` if it is invalid)."""
        hs = ServerHandshake(
            self.identity, prologue=self._prologue(), ciphers=accepted_ciphers(self.config.cipher)
        )
        hs.read_message1(message)
        flight = pk.encode_handshake_message(self.remote_cid, self.local_cid, b"", 2, hs.write_message2())
        self._answers = [*self._answers[-(MAX_MSG1_ANSWERS - 1) :], _Msg1Answer(message, hs, flight, now)]
        self._out.extend((d, self.peer_address) for d in flight)

    def _handshake_rtt_sample(self, sample: float) -> None:
        """The first RTT sample, from a handshake message and its answer (docs/protocol.md 2).

        Taken only when the message left once (Karn), so the answer is to that copy. It lets
        the first data flight be paced over a round trip rather than leave in one burst.
        """
        rtt = self._recovery.rtt
        if not rtt.has_sample and sample > 0:
            rtt.update(sample, 0.0, self.config.max_ack_delay)

    def _install_keys(self, result: HandshakeResult, now: float) -> None:
        send, recv = (
            (result.client_to_server, result.server_to_client)
            if self.is_client
            else (result.server_to_client, result.client_to_server)
        )
        self._tx = PacketProtection.from_secret(result.cipher, send)
        self._rx = PacketProtection.from_secret(result.cipher, recv)
        self._tx_generation_started = now
        self.peer_x25519 = result.peer_x25519
        self.handshake_hash = result.handshake_hash
        self.state = State.ESTABLISHED
        self._last_received = now
        self._events.append(HandshakeCompleted(result.peer_x25519, result.cipher.wire_name))

    def _open(self, key_phase: int, pn: int, data: bytes, now: float) -> tuple[bytes, int] | None:
        """Decrypt with the key matching the packet's phase; returns (plaintext, generation)."""
        assert self._rx is not None
        # Slices, not memoryviews: cryptography takes a memoryview argument more slowly than it
        # copies 1.4 KB (AES-GCM open, 1400 bytes: 1.02 us with slices, 1.27 us with views).
        head = data[: pk.DATA_HEADER_LEN]
        body = data[pk.DATA_HEADER_LEN :]
        if key_phase == self._rx_generation & 1:
            key, generation = self._rx, self._rx_generation
        elif pn < self._rx_generation_first_pn:
            if self._rx_previous is None or now > self._rx_previous_until:
                return None
            key, generation = self._rx_previous, self._rx_generation - 1
        else:
            if self._rx_next is None:
                self._rx_next = self._rx.next()
            key, generation = self._rx_next, self._rx_generation + 1
        try:
            return key.open(pn, head, body), generation
        except CryptoError:
            return None

    def _receive_data(self, key_phase: int, data: bytes, addr: Address, now: float, ecn: int) -> None:
        """A DATA packet (docs/protocol.md 6): ``data`` is at least a header and a tag long."""
        if data[1:_PN_START] != self.local_cid:
            self.count_drop("unknown-cid")
            return
        if self._rx is None or self.state is State.CLOSING:
            self.count_drop("not-ready")
            return
        pn = pk.decode_packet_number(pk.truncated_packet_number(data), self._largest_authenticated_pn)
        if self._replay.is_duplicate_or_stale(pn):
            self.count_drop("replay")
            return
        opened = self._open(key_phase, pn, data, now)
        if opened is None:
            self.count_drop("decrypt-failed")
            return
        # ---- authenticated from here on: state may change.
        plaintext, generation = opened
        self._replay.mark(pn)
        if generation > self._rx_generation:
            self._rotate_receive_key(pn, now)
        self._packets_received += 1
        self._bytes_received += len(data)
        self._ecn_received[ecn] += 1
        self._last_received = now
        if self._awaiting_server_data:
            self._awaiting_server_data = False
            self._hs_flight = []
            self._hs_retransmit_at = None
            self._peer_confirmed = True
        self._note_path(addr, pn, len(data), now)
        try:
            frames = pk.parse_frames(plaintext)
        except ParseError as exc:
            raise RemoteProtocolError(f"bad frame: {exc}", code=ErrorCode.FRAME_ENCODING_ERROR) from exc
        ack_eliciting = False
        recovered: list[tuple[int, bytes]] = []
        is_source = True
        for frame in frames:
            kind = type(frame)
            if kind is not pk.AckFrame and kind is not pk.CloseFrame:  # the frames that elicit no ACK
                ack_eliciting = True
            if kind is pk.RepairFrame:
                assert isinstance(frame, pk.RepairFrame)
                is_source = False
                recovered += self._on_repair_frame(pn, frame)
                continue
            self._handle_frame(frame, now)
            if self.state is State.CLOSED:
                return
        if is_source:
            try:
                recovered += self._fec_rx.receive_source(pn, plaintext)
            except fec.FecError as exc:
                raise RemoteProtocolError(f"inconsistent FEC block: {exc}") from exc
        self._note_received(pn, ack_eliciting, now)
        if pn > self._largest_authenticated_pn:
            self._largest_authenticated_pn = pn
            self._largest_received_time = now
        if not recovered:
            return
        # A rebuilt packet's own codepoint is unknown: it takes that of the repair that completed
        # it, CE read as ECT(0) since its original was lost, not marked (docs/protocol.md 7.6).
        rebuilt_ecn = Codepoint.ECT0 if ecn == Codepoint.CE else ecn
        for rpn, payload in recovered:
            if self.state is State.CLOSED:
                return
            self._receive_recovered(rpn, payload, now, rebuilt_ecn)

    def _note_received(self, pn: int, ack_eliciting: bool, now: float) -> None:
        """Record packet ``pn`` for our ACK frames (received, or recovered from repairs)."""
        self._received.add(pn, pn + 1)
        while len(self._received) > MAX_TRACKED_RANGES:
            self._received.pop_smallest()
        if not ack_eliciting:
            return
        self._ack_eliciting_unacked += 1
        self._ack_eliciting_received += 1
        if self._ack_eliciting_received >= ACK_DECIMATION_AFTER:
            self._ack_threshold = ACK_DECIMATION_PACKETS
        if pn != self._largest_authenticated_pn + 1:
            self._ack_deadline = now  # out of order (a gap, or a late or rebuilt packet): tell at once
        elif self._ack_deadline is None:
            self._ack_deadline = now + self._ack_delay()

    def _ack_delay(self) -> float:
        """How long an ACK may wait: max_ack_delay, or a quarter of the minimum RTT once decimating."""
        if self._ack_eliciting_received < ACK_DECIMATION_AFTER:
            return self.config.max_ack_delay
        rtt = self._recovery.rtt
        if not rtt.has_sample:
            return self.config.max_ack_delay
        return min(self.config.max_ack_delay, ACK_DECIMATION_RTT_FRACTION * rtt.min_rtt)

    def _on_repair_frame(self, pn: int, frame: pk.RepairFrame) -> list[tuple[int, bytes]]:
        """Feed a REPAIR frame from authenticated packet ``pn`` to the decoder (docs/fec.md 3, 7)."""
        try:
            repair = fec.parse_repair_body(frame.body)
        except fec.FecError as exc:
            raise RemoteProtocolError(
                f"bad REPAIR frame: {exc}", code=ErrorCode.FRAME_ENCODING_ERROR
            ) from exc
        try:
            return self._fec_rx.receive_repair(pn, repair)
        except fec.FecError as exc:
            raise RemoteProtocolError(f"bad REPAIR frame: {exc}") from exc

    def _receive_recovered(self, pn: int, payload: bytes, now: float, ecn: int) -> None:
        """Process a packet rebuilt from repair symbols as if it had arrived (docs/fec.md 7).

        Its ACK frames are skipped (stale, and they would skew the RTT); it has
        no source address, so it never moves the path, and it is not counted
        as received traffic.
        """
        if self._replay.is_duplicate_or_stale(pn):
            self.count_drop("fec-duplicate")
            return
        self._replay.mark(pn)
        self._ecn_received[ecn] += 1
        try:
            frames = pk.parse_frames(payload)
        except ParseError as exc:
            raise RemoteProtocolError(f"bad frame: {exc}", code=ErrorCode.FRAME_ENCODING_ERROR) from exc
        ack_eliciting = False
        for frame in frames:
            if isinstance(frame, pk.AckFrame | pk.RepairFrame):
                continue
            if not isinstance(frame, pk.CloseFrame):
                ack_eliciting = True
            self._handle_frame(frame, now)
            if self.state is State.CLOSED:
                return
        self._fec_recovered += 1
        self._note_received(pn, ack_eliciting, now)

    def _rotate_receive_key(self, pn: int, now: float) -> None:
        assert self._rx is not None and self._rx_next is not None
        self._rx_previous = self._rx
        self._rx_previous_until = now + 3 * self._pto_interval()
        self._rx = self._rx_next
        self._rx_next = None
        self._rx_generation += 1
        self._rx_generation_first_pn = pn
        if self._tx_generation < self._rx_generation:
            self._advance_send_key(now)

    def _advance_send_key(self, now: float) -> None:
        assert self._tx is not None
        self._tx = self._tx.next()
        self._tx_generation += 1
        self._tx_generation_packets = 0
        self._tx_generation_started = now

    def _note_path(self, addr: Address, pn: int, size: int, now: float) -> None:
        if addr == self.peer_address:
            if not self._path_validated:
                self._path_bytes_received += size
            return
        if pn <= self._largest_authenticated_pn:
            return  # a reordered packet from an old path does not move us
        # RFC 9000 9.3: follow the newest authenticated address, but validate it
        # and send no more than 3x what it sent us until it answers.
        self._path_previous = self.peer_address if self._path_validated else self._path_previous
        self.peer_address = addr
        self._path_validated = False
        self._path_bytes_received = size
        self._path_bytes_sent = 0
        self._path_challenge = os.urandom(8)
        self._path_challenge_attempts = 1
        self._path_challenge_deadline = now + max(3 * self._pto_interval(), 0.2)
        self._queue_control(("path_challenge",))
        self._events.append(PathMigrated(addr))

    def _handle_frame(self, frame: pk.Frame, now: float) -> None:
        if isinstance(frame, pk.StreamFrame):
            self._on_stream_frame(frame)
        elif isinstance(frame, pk.AckFrame):
            self._on_ack(frame, now)
        elif isinstance(frame, pk.PingFrame):
            pass
        elif isinstance(frame, pk.MaxDataFrame):
            self._conn_credit.update_limit(frame.maximum)
            self._requeue_all_streams()
        elif isinstance(frame, pk.MaxStreamDataFrame):
            stream = self._stream_for_peer_frame(frame.stream_id)
            if stream is not None and frame.maximum > stream.peer_max_data:
                stream.peer_max_data = frame.maximum
                self._mark_send_ready(stream.stream_id)
        elif isinstance(frame, pk.MaxStreamsFrame):
            self._peer_stream_limit = max(self._peer_stream_limit, frame.maximum)
        elif isinstance(frame, pk.DatagramFrame):
            self._events.append(DatagramReceived(frame.data))
        elif isinstance(frame, pk.ResetStreamFrame):
            stream = self._stream_for_peer_frame(frame.stream_id)
            if stream is not None and not stream.recv.is_finished:
                grown = stream.recv.on_reset(frame.final_size, frame.error_code)
                self._conn_window.on_received(grown)
                self._events.append(StreamReset(frame.stream_id, frame.error_code))
                self._maybe_discard_stream(stream)
        elif isinstance(frame, pk.StopSendingFrame):
            stream = self._stream_for_peer_frame(frame.stream_id)
            if stream is not None:
                self._events.append(StopSendingReceived(frame.stream_id, frame.error_code))
                self.reset_stream(frame.stream_id, frame.error_code)
        elif isinstance(frame, pk.PathChallengeFrame):
            self._path_responses.append(frame.data)
        elif isinstance(frame, pk.PathResponseFrame):
            if self._path_challenge is not None and frame.data == self._path_challenge:
                self._path_validated = True
                self._path_challenge = None
                self._path_challenge_deadline = None
                self._path_previous = None
        elif isinstance(frame, pk.CloseFrame):
            self._terminate(frame.error_code, frame.reason or "closed by peer", by_peer=True)
        elif isinstance(frame, pk.HandshakeDoneFrame):
            if not self.is_client:
                raise RemoteProtocolError("HANDSHAKE_DONE from a client")

    def _stream_for_peer_frame(self, stream_id: int) -> _StreamState | None:
        """The stream a frame names, opening a peer stream implicitly; None if long gone."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        local = (stream_id & 1) == (0 if self.is_client else 1)
        index = stream_id >> 1
        if local:
            if index >= self._next_local_stream_index:
                raise RemoteProtocolError(
                    f"frame for stream {stream_id} we never opened", code=ErrorCode.STREAM_STATE_ERROR
                )
            return None  # finished and discarded
        if index <= self._highest_peer_stream_index:
            return None  # finished and discarded
        if index >= self._local_stream_limit:
            raise RemoteProtocolError(
                f"peer opened stream {stream_id} beyond the limit", code=ErrorCode.STREAM_LIMIT_ERROR
            )
        # Streams below ``index`` that the peer skipped are opened implicitly (RFC 9000 3.2).
        for skipped in range(self._highest_peer_stream_index + 1, index + 1):
            sid = skipped * 2 + (1 if self.is_client else 0)
            self._streams[sid] = _StreamState(sid, self.config)
        self._highest_peer_stream_index = index
        return self._streams[stream_id]

    def _on_stream_frame(self, frame: pk.StreamFrame) -> None:
        stream = self._stream_for_peer_frame(frame.stream_id)
        if stream is None:
            return
        recv = stream.recv
        before = recv.highest_received
        if recv.on_frame(frame.offset, frame.data, frame.fin):
            self._queue_control(("max_stream_data", frame.stream_id))  # the raise did not arrive
        grown = recv.highest_received - before
        if grown and self._conn_window.on_received(grown):
            self._queue_control(("max_data",))
        data, end = recv.pull()
        if data or end:
            self._events.append(StreamDataReceived(frame.stream_id, data, end))
            if end:
                self._maybe_discard_stream(stream)

    def _on_ack(self, frame: pk.AckFrame, now: float) -> None:
        largest = frame.ranges[0][1]
        if largest >= self._next_pn:
            raise RemoteProtocolError("ACK of a packet never sent")
        largest_before = self._recovery.largest_acked
        acked, lost = self._recovery.on_ack_received(frame.ranges, frame.ack_delay_us / 1e6, now, frame.ecn)
        fec_tx = self._fec_tx
        # docs/fec.md 4: losses the peer repaired are still the path's loss (before blocks resolve)
        hidden = fec_tx.hidden_losses((p.packet_number for p in acked), largest_before)
        # docs/fec.md 5: parked packets this ACK covers were recovered (or only reordered).
        self._on_packets_acked([self._fec_deferred.pop(pn) for pn in fec_tx.on_ack_ranges(frame.ranges)])
        self._on_packets_acked(acked)
        acked_probes = 0
        for packet in acked:
            frames = packet.frames
            if not frames:
                continue
            kind = frames[0][0]  # a repair or an MTU probe is its packet's only record
            if kind == "repair":
                self._retransmit_deferred(fec_tx.on_repair_resolved(frames[0][1]))
            elif kind == "mtu_probe":
                acked_probes += 1
                self._on_mtu_probe_fate(frames[0][1], True, now)
        self._watch_for_black_hole(acked, lost)
        lost_count = len(lost) - self._handle_lost(lost, now)  # MTU probes are not the path's loss
        resolved = len(acked) - acked_probes + lost_count
        if resolved:
            fec_tx.on_loss_sample(lost_count + hidden, resolved)
        if acked:
            self._probes_owed = 0

    def _watch_for_black_hole(self, acked: list[SentPacket], lost: list[SentPacket]) -> None:
        """docs/protocol.md 7.5: packets above the base size keep vanishing while smaller ones
        arrive, so the path MTU shrank (a route change); go back to the base size and search.

        Random loss does not look like this: any packet above the base size that
        is acknowledged starts the count again.
        """
        base = self.config.max_datagram_size
        if self._datagram_size <= base:
            self._big_lost_in_row = 0
            return
        self._big_lost_in_row += sum(1 for p in lost if p.size > base and not p.is_mtu_probe)
        if not acked:
            return
        if any(p.size > base for p in acked):
            self._big_lost_in_row = 0
        elif self._big_lost_in_row >= BLACK_HOLE_LOSSES:
            self._big_lost_in_row = 0
            self._on_black_hole()

    def _on_black_hole(self) -> None:
        """docs/protocol.md 7.5: back to the base size, and search again."""
        if self._pmtu.on_black_hole():
            self._set_datagram_size(self._pmtu.current)

    def _handle_lost(self, lost: list[SentPacket], now: float) -> int:
        """Packets loss detection declared lost: retransmit, or park those a FEC block protects.

        Returns how many of them were MTU probes (lost to the search, not to the path).
        """
        if self._recovery.persistent_congestion_count != self._persistent_congestion_seen:
            self._persistent_congestion_seen = self._recovery.persistent_congestion_count
            self._on_black_hole()
        if not lost:
            return 0
        fec_tx = self._fec_tx
        retransmit: list[SentPacket] = []
        probes = 0
        for packet in lost:
            frames = packet.frames
            if packet.is_mtu_probe:
                probes += 1
                self._on_mtu_probe_fate(frames[0][1], False, now)
            elif frames and frames[0][0] == "repair":
                self._retransmit_deferred(fec_tx.on_repair_resolved(frames[0][1]))
            elif frames and fec_tx.defer_loss(packet.packet_number):
                self._fec_deferred[packet.packet_number] = packet
                # Its ACK may mean the peer rebuilt it from repairs: not evidence of reordering.
                self._recovery.forget_lost(packet.packet_number)
            else:
                retransmit.append(packet)
        self._on_packets_lost(retransmit)
        return probes

    def _retransmit_deferred(self, packet_numbers: list[int]) -> None:
        """Parked packets the peer could not recover: retransmit their frames now."""
        if packet_numbers:
            self._on_packets_lost([self._fec_deferred.pop(pn) for pn in packet_numbers])

    def _on_packets_acked(self, packets: list[SentPacket]) -> None:
        """Release the stream data these packets carried.

        Packets of a bulk transfer carry adjacent ranges of one stream, so each
        run of adjacent ranges is handed to its stream as one range: one call
        per ACK rather than one per packet.
        """
        run_sid = -1
        run_start = run_stop = 0
        for packet in packets:
            for info in packet.frames:
                if info[0] != "stream":
                    continue
                _, sid, offset, length, fin = info
                if sid == run_sid and offset == run_stop and not fin:
                    run_stop += length
                    continue
                if run_sid >= 0:
                    self._stream_data_acked(run_sid, run_start, run_stop - run_start, False)
                if fin:
                    self._stream_data_acked(sid, offset, length, True)
                    run_sid = -1
                else:
                    run_sid, run_start, run_stop = sid, offset, offset + length
        if run_sid >= 0:
            self._stream_data_acked(run_sid, run_start, run_stop - run_start, False)

    def _stream_data_acked(self, sid: int, offset: int, length: int, fin: bool) -> None:
        stream = self._streams.get(sid)
        if stream is not None:
            stream.send.on_acked(offset, length, fin)
            self._maybe_discard_stream(stream)

    def _on_packets_lost(self, lost: list[SentPacket]) -> None:
        for packet in lost:
            for info in packet.frames:
                kind = info[0]
                if kind == "stream":
                    self._stream_data_lost(*info[1:])
                elif kind in (
                    "max_data",
                    "max_stream_data",
                    "reset",
                    "stop",
                    "max_streams",
                    "handshake_done",
                ):
                    if kind == "handshake_done":
                        self._handshake_done_pending = True
                    else:
                        self._queue_control(info)

    def _stream_data_lost(self, sid: int, offset: int, length: int, fin: bool) -> bool:
        """Queue a stream range to be sent again; False if its stream is gone or reset."""
        stream = self._streams.get(sid)
        if stream is None or stream.send.is_reset:
            return False
        stream.send.on_lost(offset, length, fin)
        self._mark_send_ready(sid)
        return True

    def _maybe_discard_stream(self, stream: _StreamState) -> None:
        send_done = stream.send.is_reset or stream.send.all_acked
        if not (send_done and stream.recv.is_finished and stream.recv.fully_delivered):
            return
        del self._streams[stream.stream_id]
        peer_initiated = (stream.stream_id & 1) == (1 if self.is_client else 0)
        if peer_initiated:
            self._peer_streams_closed += 1
            self._local_stream_limit = self._peer_streams_closed + self.config.max_concurrent_streams
            if (
                self._local_stream_limit - self._local_stream_limit_sent
                >= self.config.max_concurrent_streams // 2
            ):
                self._queue_control(("max_streams",))

    # ------------------------------------------------------------------- send

    def _queue_control(self, info: tuple[Any, ...]) -> None:
        if len(self._control) < MAX_PENDING_CONTROL:
            self._control.append(info)
        else:
            self.count_drop("control-queue-full")

    def _mark_send_ready(self, stream_id: int) -> None:
        if stream_id not in self._send_ready_set:
            self._send_ready_set.add(stream_id)
            self._send_ready.append(stream_id)

    def _resend_tail_for_probe(self) -> bool:
        """A probe with nothing new to carry resends the newest stream data in flight (RFC 8985 7.3).

        If the tail was lost, the probe repairs it, a round trip before the
        probe's ACK could get it declared lost and sent again; if it was not,
        one packet was spent. Looks through the newest ``TLP_TAIL_SEARCH``
        packets (repair and MTU probe packets carry no stream data). Returns
        whether anything was queued.
        """
        for count, packet in enumerate(self._recovery.newest_in_flight()):
            if count >= TLP_TAIL_SEARCH:
                break
            queued = False
            for info in packet.frames:
                if info[0] == "stream":
                    queued = self._stream_data_lost(*info[1:]) or queued
            if queued:
                return True
        return False

    def _requeue_all_streams(self) -> None:
        for stream_id, stream in self._streams.items():
            if stream.send.has_pending:
                self._mark_send_ready(stream_id)

    def _encode_control(self, info: tuple[Any, ...]) -> bytes | None:
        kind = info[0]
        if kind == "max_data":
            return pk.encode_varints(pk.FrameType.MAX_DATA, (self._conn_window.current_max,))
        if kind == "max_stream_data":
            stream = self._streams.get(info[1])
            if stream is None or stream.recv.is_finished:
                return None
            return pk.encode_varints(pk.FrameType.MAX_STREAM_DATA, (info[1], stream.recv.current_max_data))
        if kind == "max_streams":
            self._local_stream_limit_sent = self._local_stream_limit
            return pk.encode_varints(pk.FrameType.MAX_STREAMS, (self._local_stream_limit,))
        if kind == "reset":
            return pk.encode_varints(pk.FrameType.RESET_STREAM, info[1:])
        if kind == "stop":
            stream = self._streams.get(info[1])
            if stream is None or stream.recv.is_finished:
                return None
            return pk.encode_varints(pk.FrameType.STOP_SENDING, info[1:])
        if kind == "path_challenge":
            if self._path_challenge is None:
                return None
            return pk.encode_path(pk.FrameType.PATH_CHALLENGE, self._path_challenge)
        raise AssertionError(kind)

    def _pto_interval(self) -> float:
        rtt = self._recovery.rtt
        return rtt.smoothed_rtt + max(4 * rtt.rttvar, 0.001) + self.config.max_ack_delay

    def _ack_frame(self, now: float) -> bytes | None:
        if not self._received:
            return None
        ranges = [
            (start, stop - 1)
            for start, stop in itertools.islice(reversed(self._received), MAX_ACK_RANGES_SENT)
        ]
        delay_us = int(max(0.0, now - self._largest_received_time) * 1e6)
        _, ect1, ect0, ce = self._ecn_received
        if ect0 or ect1 or ce:  # RFC 9000 13.4.1: ACK_ECN once anything arrived marked
            return pk.encode_ack(ranges, delay_us, pk.EcnCounts(ect0, ect1, ce))
        return pk.encode_ack(ranges, delay_us)

    def _amplification_room(self) -> int:
        if self._path_validated:
            return 1 << 62
        return AMPLIFICATION_FACTOR * self._path_bytes_received - self._path_bytes_sent

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything ready to go now, as ``(datagram, address)`` pairs."""
        out = self._out
        self._out = []
        self._ecn_marking = False
        if self.state is State.CLOSED:
            return out
        if self._hs_retransmit_at is not None and now >= self._hs_retransmit_at:
            out.extend((d, self.peer_address) for d in self._hs_flight)
            if self._msg1_unanswered():
                if self._msg1_sends == 0:
                    self._msg1_sent_at = now
                self._msg1_sends += 1
                if not self._msg2_progress and self._hs_backoff >= 2 * HANDSHAKE_RETRANSMIT_INITIAL:
                    # msg1 unanswered twice: perhaps our cookie was damaged. Ask for a fresh one.
                    out.append((pk.encode_hello(self.remote_cid, self.local_cid), self.peer_address))
            self._msg2_progress = False
            self._hs_retransmit_at = now + self._hs_backoff
            self._hs_backoff = min(self._hs_backoff * 2, HANDSHAKE_RETRANSMIT_MAX)
        if self._tx is None:
            return out
        ecn = self._recovery.ecn
        ecn.begin_flight()
        self._ecn_marking = ecn.marking and not out  # one codepoint per batch, handshakes unmarked
        if self.state is State.CLOSING:
            self._send_close(out, now)
            return out
        if self._tx_generation_packets >= self.config.key_update_packets or (
            now >= self._tx_generation_started + self.config.key_update_interval
        ):
            if self._rx_generation == self._tx_generation and self._peer_confirmed:
                self._advance_send_key(now)
        self._fill_packets(out, now)
        return out

    def _send_close(self, out: list[tuple[bytes, Address]], now: float) -> None:
        assert self._close_frame is not None
        for _ in range(2):  # twice, so one lost datagram does not leave the peer waiting
            out.append((self._seal(self._close_frame, now), self.peer_address))
        code, reason = self._close_info
        self._terminate(code, reason or "closed", by_peer=False)

    def _seal(self, payload: bytes, now: float) -> bytes:
        assert self._tx is not None
        pn = self._next_pn
        if pn >= MAX_PACKET_NUMBER:
            raise LocalProtocolError("packet number space exhausted")
        self._next_pn = pn + 1
        self._tx_generation_packets += 1
        header = pk.encode_data_header(self._tx_generation & 1, self.remote_cid, pn)
        if len(payload) < 4:  # keep the AEAD input long enough to be unremarkable
            payload = payload + bytes(4 - len(payload))
        datagram = header + self._tx.seal(pn, header, payload)
        if self._ecn_marking:
            self._recovery.ecn.on_packet_sent()
        self._packets_sent += 1
        self._bytes_sent += len(datagram)
        return datagram

    def _fill_packets(self, out: list[tuple[bytes, Address]], now: float) -> None:
        """Build packets until nothing is left, the window is full or the pacer says wait.

        ACK-only packets go regardless of the window and the pacer; PTO probes
        regardless of both as well (RFC 9002 section 7.5), but they are charged
        to the pacer. Leaving because of the pacer sets ``_pace_at``, which
        ``get_timer`` reports, when there is anything left to send.
        """
        recovery = self._recovery
        pacer = self._pacer
        pacer.set_rate(pacing_rate_for(recovery.congestion, recovery.rtt), now)
        self._pace_at = None
        if self._pmtu.in_flight is None and self.state is State.ESTABLISHED:
            self._maybe_probe_mtu(out, now)
        max_payload = self._max_payload
        budget_packets = 1024  # bound the work of one call
        while budget_packets > 0:
            budget_packets -= 1
            if self._next_pn >= MAX_PACKET_NUMBER - 1:
                self._fail(ErrorCode.AEAD_LIMIT_REACHED, "packet number space exhausted")
                return
            room = self._amplification_room()
            if room < self._datagram_size:
                return
            probe = self._probes_owed > 0
            cwnd_open = probe or recovery.can_send(self._datagram_size)
            if cwnd_open and not probe and pacer.rate is not None:
                pace_at = pacer.next_send_time(now)
                if pace_at is not None:
                    cwnd_open = False  # as if the window were full: only a due ACK may go
                    if self._has_paced_data(now):
                        self._pace_at = pace_at
            parts: list[bytes | bytearray] = []
            infos: list[Any] = []
            size = 0
            ack_eliciting = False
            ack_due = self._ack_eliciting_unacked >= self._ack_threshold or (
                self._ack_deadline is not None and now >= self._ack_deadline
            )
            # Built only if it will go: due, or able to ride along with something
            # ack-eliciting (a receiver would otherwise build and drop one per wake-up).
            ack = (
                self._ack_frame(now)
                if ack_due
                or (
                    self._ack_eliciting_unacked
                    and (probe or self._path_responses or (cwnd_open and self._has_paced_data(now)))
                )
                else None
            )
            if cwnd_open and self._fec_tx.has_repair:
                self._send_repair(out, ack, probe, now)  # repairs go before new data
                continue
            # While FEC is active, leave room for a repair symbol of this packet (docs/fec.md 4).
            limit = (
                self._fec_max_source
                if (self._fec_tx.repair_count or self._fec_tx.block_open)
                else max_payload
            )
            if (
                probe
                and self._recovery.pto_count >= 2
                and self._datagram_size > self.config.max_datagram_size
            ):
                # Consecutive PTOs: probe at the base size, which a path whose MTU shrank still
                # carries, so its ACK can reveal the black hole (docs/protocol.md 7.5).
                limit = min(limit, self.config.max_datagram_size - _DATA_OVERHEAD)
            if ack is not None:
                # Reserved now; kept below only if due or if it can ride along.
                parts.append(ack)
                size += len(ack)
            while self._path_responses and size + 9 <= limit:
                parts.append(pk.encode_path(pk.FrameType.PATH_RESPONSE, self._path_responses.popleft()))
                size += 9
                ack_eliciting = True
            if cwnd_open:
                if self._handshake_done_pending and not self.is_client:
                    parts.append(pk.HANDSHAKE_DONE_BYTES)
                    infos.append(("handshake_done",))
                    size += 1
                    ack_eliciting = True
                    self._handshake_done_pending = False
                while self._control and size + 64 <= limit:
                    info = self._control.popleft()
                    encoded = self._encode_control(info)
                    if encoded is None:
                        continue
                    parts.append(encoded)
                    infos.append(info)
                    size += len(encoded)
                    ack_eliciting = True
                while self._datagrams_out:
                    dgram = self._datagrams_out[0]
                    if len(dgram) > self._max_datagram_payload:
                        # Queued before the path MTU shrank (docs/protocol.md 7.5): it fits no packet.
                        self._datagrams_out.popleft()
                        self.count_drop("datagram-too-big-for-path")
                        continue
                    encoded = pk.encode_datagram(dgram)
                    if size + len(encoded) > limit:
                        break
                    self._datagrams_out.popleft()
                    parts.append(encoded)
                    size += len(encoded)
                    ack_eliciting = True
                size = self._fill_streams(parts, infos, size, limit)
                ack_eliciting = ack_eliciting or bool(infos)
                if probe and not ack_eliciting and self._resend_tail_for_probe():
                    size = self._fill_streams(parts, infos, size, limit)
                    ack_eliciting = bool(infos)
                if probe and not ack_eliciting:
                    parts.append(pk.PING_BYTES)
                    size += 1
                    ack_eliciting = True
                if (
                    not ack_eliciting
                    and now >= self._last_ack_eliciting_sent + self.config.keepalive_interval
                ):
                    parts.append(pk.PING_BYTES)
                    size += 1
                    ack_eliciting = True
            if ack is not None:
                if ack_eliciting or ack_due:
                    self._ack_eliciting_unacked = 0
                    self._ack_deadline = None
                else:
                    parts.pop(0)  # nothing to carry it and not yet due: keep waiting
            if not parts:
                if cwnd_open and self._fec_tx.block_open:
                    self._fec_tx.flush()  # idle with the window open: protect what went out now
                    continue
                if cwnd_open and not probe:
                    recovery.on_app_limited()  # the window is open and nothing is left to send
                return
            plaintext = b"".join(parts)
            if len(plaintext) < 4:  # padded here, so the FEC encoder sees exactly what is sealed
                plaintext += bytes(4 - len(plaintext))
            datagram = self._seal(plaintext, now)
            self._fec_tx.add(self._next_pn - 1, plaintext, ack_eliciting=ack_eliciting)
            if not self._path_validated:
                self._path_bytes_sent += len(datagram)
            out.append((datagram, self.peer_address))
            if ack_eliciting:
                self._track_sent(datagram, infos, probe, now)
            elif not cwnd_open:
                return  # an ACK-only packet; nothing else may go until the window (or pacer) opens
            if (
                infos
                and not probe
                and self._path_validated
                and not (self._control or self._datagrams_out or self._path_responses)
                and not (self._fec_tx.repair_count or self._fec_tx.block_open or self._fec_tx.has_repair)
            ):
                budget_packets = self._send_stream_packets(out, budget_packets, now)

    def _send_stream_packets(self, out: list[tuple[bytes, Address]], budget: int, now: float) -> int:
        """The bulk case of ``_fill_packets``: packets of stream data only, back to back.

        Called once a packet held nothing else, no FEC is active and the path is
        validated; none of that changes until ``_fill_packets`` returns, so each
        packet needs only the window, the pacer and the streams. Leaves at the
        first packet that cannot go (``_fill_packets``'s own loop then decides
        why: pacer, window or no data) and returns the budget left.
        """
        recovery = self._recovery
        pacer = self._pacer
        size = self._datagram_size
        max_payload = self._max_payload
        address = self.peer_address
        while budget > 0 and self._send_ready and self._next_pn < MAX_PACKET_NUMBER - 1:
            if not recovery.can_send(size) or (
                pacer.rate is not None and pacer.next_send_time(now) is not None
            ):
                break
            parts: list[bytes | bytearray] = []
            infos: list[Any] = []
            self._fill_streams(parts, infos, 0, max_payload)
            if not infos:
                break
            budget -= 1
            datagram = self._seal(b"".join(parts), now)
            out.append((datagram, address))
            self._track_sent(datagram, infos, False, now)
        return budget

    def _send_repair(
        self, out: list[tuple[bytes, Address]], ack: bytes | None, probe: bool, now: float
    ) -> None:
        """Send the next repair symbol in a packet of its own, with an ACK if one fits (docs/fec.md 3).

        A repair packet is ack-eliciting and in flight, but never a source
        packet and never retransmitted: recovery resolving it (acked or lost)
        is what releases the parked packets of its block.
        """
        repair = self._fec_tx.pop_repair()
        assert repair is not None
        frame = pk.encode_repair(fec.encode_repair_body(repair))
        if ack is not None and len(ack) + len(frame) <= self._max_payload:
            frame = ack + frame
            self._ack_eliciting_unacked = 0
            self._ack_deadline = None
        datagram = self._seal(frame, now)
        if not self._path_validated:
            self._path_bytes_sent += len(datagram)
        out.append((datagram, self.peer_address))
        self._track_sent(datagram, [("repair", repair.block_id)], probe, now)

    def _maybe_probe_mtu(self, out: list[tuple[bytes, Address]], now: float) -> None:
        """Send a path MTU probe if the search wants one and the window has room for it.

        PING and PADDING, exactly the size being tried (docs/protocol.md 7.5). It is
        never retransmitted and never part of a FEC block; its fate only moves the search.
        """
        size = self._pmtu.next_probe(now)
        if size is None or not self._recovery.can_send(size) or self._amplification_room() < size:
            return
        padding = size - _DATA_OVERHEAD - len(pk.PING_BYTES)
        datagram = self._seal(pk.PING_BYTES + bytes(padding), now)
        out.append((datagram, self.peer_address))
        self._pmtu.on_probe_sent(size)
        self._track_sent(datagram, [("mtu_probe", size)], False, now, is_mtu_probe=True)

    def _set_datagram_size(self, size: int) -> None:
        """Use ``size``-byte datagrams from the next packet on (PMTU discovery moved)."""
        self._datagram_size = size
        self._max_payload = size - _DATA_OVERHEAD
        self._fec_max_source = fec.max_source_payload(self._max_payload)
        self._fec_tx.max_source = min(self._fec_max_source, fec.MAX_SOURCE)
        self._recovery.congestion.max_datagram_size = size
        self._pacer.max_datagram_size = size
        self._max_datagram_payload = self._datagram_room()

    def _on_mtu_probe_fate(self, size: int, acked: bool, now: float) -> None:
        if acked:
            if self._pmtu.on_probe_acked(size, now):
                self._set_datagram_size(self._pmtu.current)
        else:
            self._pmtu.on_probe_lost(size, now)

    def _track_sent(
        self, datagram: bytes, frames: list[Any], probe: bool, now: float, *, is_mtu_probe: bool = False
    ) -> None:
        """Hand an ack-eliciting packet just sealed to the pacer and to loss recovery."""
        if probe:
            self._probes_owed -= 1
        self._last_ack_eliciting_sent = now
        size = len(datagram)
        self._pacer.on_packet_sent(now, size)
        # Positional: per packet, keywords cost more than twice as much here.
        packet = SentPacket(self._next_pn - 1, now, size, True, True, frames, is_mtu_probe)
        if self._ecn_marking:
            packet.ecn = True
        self._recovery.on_packet_sent(packet, now)

    def _has_paced_data(self, now: float) -> bool:
        """Anything the pacer holds back: stream data, control frames, datagrams, FEC or a due keepalive."""
        return bool(
            self._send_ready
            or self._control
            or self._datagrams_out
            or self._fec_tx.has_repair
            or self._fec_tx.block_open
            or (self._handshake_done_pending and not self.is_client)
            or now >= self._last_ack_eliciting_sent + self.config.keepalive_interval
        )

    def _fill_streams(
        self, parts: list[bytes | bytearray], infos: list[Any], size: int, max_payload: int
    ) -> int:
        ready = self._send_ready
        ready_set = self._send_ready_set
        rounds = len(ready)
        while ready and rounds > 0 and max_payload - size > 16:
            rounds -= 1
            stream_id = ready[0]
            stream = self._streams.get(stream_id)
            if stream is None or stream.send.is_reset:
                ready.popleft()
                ready_set.discard(stream_id)
                continue
            send = stream.send
            credit = min(stream.peer_max_data - send.highest_sent, self._conn_credit.available)
            # The frame's length fits the varint of the room left, and an offset 1 MiB past the newest
            # byte sent covers retransmissions and new data alike.
            room = (
                max_payload
                - size
                - pk.stream_frame_overhead(stream_id, send.highest_sent + (1 << 20), max_payload - size)
            )
            if room <= 0:
                break
            before = send.highest_sent
            chunk = send.next_frame(room, max(credit, 0))
            if chunk is None:
                ready.popleft()
                ready_set.discard(stream_id)
                continue
            offset, data, fin = chunk
            grown = send.highest_sent - before
            if grown:
                self._conn_credit.consume(grown)
            if data and offset < before:
                self._packets_retransmitted += 1
            head = pk.encode_stream_header(stream_id, offset, len(data), fin)
            parts.append(head)
            parts.append(data)
            infos.append(("stream", stream_id, offset, len(data), fin))
            size += len(head) + len(data)
            if not send.has_pending or (
                send.highest_sent >= stream.peer_max_data and not send.has_retransmit
            ):
                ready.popleft()
                ready_set.discard(stream_id)
            else:
                ready.rotate(-1)
        return size

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The next time ``handle_timer`` must be called, or None."""
        if self.state is State.CLOSED:
            return None
        timers: list[float] = []
        if self.state in (State.HELLO, State.HANDSHAKE):
            timers.append(self._hs_deadline)
        if self._hs_retransmit_at is not None:
            timers.append(self._hs_retransmit_at)
        if self._tx is not None:
            timers.append(self._last_received + self.config.idle_timeout)
            timers.append(self._last_ack_eliciting_sent + self.config.keepalive_interval)
            if self._ack_deadline is not None:
                timers.append(self._ack_deadline)
            loss = self._recovery.get_loss_detection_timer()
            if loss is not None:
                timers.append(loss)
            if self._pace_at is not None:
                timers.append(self._pace_at)
            if self._path_challenge_deadline is not None:
                timers.append(self._path_challenge_deadline)
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        if self.state in (State.HELLO, State.HANDSHAKE) and now >= self._hs_deadline:
            self._handshake_failed(
                HandshakeError(
                    f"no answer from {self.peer_address[0]}:{self.peer_address[1]} within "
                    f"{self.config.handshake_timeout:g} s",
                    reason="timeout",
                )
            )
            return
        if self._tx is None:
            return
        if now >= self._last_received + self.config.idle_timeout:
            self._terminate(
                ErrorCode.IDLE_TIMEOUT,
                f"idle timeout: nothing heard from the peer for {self.config.idle_timeout:g} s",
                by_peer=False,
            )
            return
        loss = self._recovery.get_loss_detection_timer()
        if loss is not None and now >= loss:
            lost, probes = self._recovery.on_loss_detection_timeout(now)
            real = len(lost) - self._handle_lost(lost, now)
            if real:
                self._fec_tx.on_loss_sample(real, real)
            self._probes_owed = max(self._probes_owed, probes)
        if self._path_challenge_deadline is not None and now >= self._path_challenge_deadline:
            if self._path_challenge_attempts < PATH_CHALLENGE_ATTEMPTS:
                self._path_challenge_attempts += 1
                self._path_challenge = os.urandom(8)
                self._path_challenge_deadline = now + max(3 * self._pto_interval(), 0.2)
                self._queue_control(("path_challenge",))
            else:
                self._path_challenge = None
                self._path_challenge_deadline = None
                if self._path_previous is not None:
                    self.peer_address = self._path_previous
                    self._path_previous = None
                    self._path_validated = True

    # ---------------------------------------------------------------- failure

    def _fail(self, code: int, reason: str) -> None:
        """An authenticated protocol violation: tell the peer, then stop."""
        if self._tx is not None and self.state is State.ESTABLISHED:
            self.state = State.CLOSING
            self._close_frame = pk.encode_close(code, reason)
            self._close_info = (code, reason)
            self._send_close(self._out, self._last_received)
        else:
            self._terminate(code, reason, by_peer=False)

    def _handshake_failed(self, exc: HandshakeError) -> None:
        self._terminate(ErrorCode.PROTOCOL_VIOLATION, str(exc), by_peer=False, handshake_failure=exc.reason)

    def _terminate(
        self, code: int, reason: str, *, by_peer: bool, handshake_failure: str | None = None
    ) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._hs_retransmit_at = None
        self._events.append(ConnectionTerminated(code, reason, by_peer, handshake_failure))
