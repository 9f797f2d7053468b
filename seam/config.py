"""Validated, immutable connection settings.

One frozen pydantic model is shared by both ends; a bad value fails at
construction with a message that names the field, never later on the wire.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CipherName = Literal["auto", "chacha20poly1305", "aes256gcm"]


class SeamConfig(BaseModel):
    """Transport tuning; the defaults suit a relay on the public internet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cipher: CipherName = "auto"  # AES-256-GCM with AES in hardware, else ChaCha20-Poly1305
    congestion: str = "bbr"  # a name from seam.congestion.available(): "cubic", "newreno" or "bbr"
    max_datagram_size: int = Field(default=1200, ge=1200, le=65000)  # bytes of UDP payload at the start
    # Path MTU discovery (seam.pmtud) probes up to this many bytes of UDP payload; at or below
    # max_datagram_size it is off. 1472 fills a 1500-byte IPv4 packet (1452 for IPv6, found by search).
    pmtu_ceiling: int = Field(default=1472, ge=1200, le=65000)
    handshake_timeout: float = Field(default=10.0, gt=0, le=300)  # seconds
    idle_timeout: float = Field(default=30.0, gt=0, le=3600)  # seconds without hearing the peer
    keepalive_interval: float = Field(default=10.0, gt=0, le=3600)  # seconds between PINGs when quiet
    max_ack_delay: float = Field(default=0.025, ge=0.001, le=1.0)  # seconds, RFC 9000 18.2
    initial_rtt: float = Field(default=0.333, gt=0, le=10)  # seconds, RFC 9002 6.2.2
    stream_receive_window: int = Field(default=4 * 1024 * 1024, ge=16 * 1024)  # bytes
    connection_receive_window: int = Field(default=16 * 1024 * 1024, ge=16 * 1024)  # bytes
    stream_send_buffer: int = Field(default=1024 * 1024, ge=16 * 1024)  # bytes
    max_concurrent_streams: int = Field(default=1024, ge=1, le=1_000_000)
    datagram_queue_size: int = Field(default=1024, ge=1)  # datagrams queued per direction
    key_update_packets: int = Field(default=1 << 20, ge=16)  # packets per key generation
    key_update_interval: float = Field(default=3600.0, gt=0)  # seconds per key generation
    fec: str = "off"  # repair packets we send: "off", "auto" or "K,M" (docs/fec.md); we always decode

    @field_validator("congestion")
    @classmethod
    def _known_congestion(cls, value: str) -> str:
        from seam.congestion import available

        names = available()
        if value not in names:
            raise ValueError(f"unknown congestion controller {value!r}; choose one of {', '.join(names)}")
        return value

    @field_validator("fec")
    @classmethod
    def _valid_fec(cls, value: str) -> str:
        from seam.fec import parse_fec_spec

        return str(parse_fec_spec(value))  # normalised: "off", "auto" or "K,M"
