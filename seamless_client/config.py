"""The client's saved relay details, and the validated settings one tunnel runs with.

``seamless config init`` pins a relay (address and Seam public keys) and an
optional token in ``$XDG_CONFIG_HOME/seamless/config.toml``, so that
``seamless http 3000`` needs no other flags. The file may hold a token, so it
is created 0600 in a 0700 directory. Flags override the file field by field.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seam import PublicKeys
from seam.config import CipherName
from seam.fec import parse_fec_spec
from seamless_relay.config import (
    LABEL_RE,
    ConfigError,
    CongestionName,
    FieldError,
    HostPort,
    check_host,
    explain,
    is_hostname,
    split_host_port,
)

TunnelKind = Literal["http", "tcp", "udp"]
MAX_TOKEN = 512  # characters, the control protocol's limit (seamless_relay.control.Register)
INIT_HINT = "run `seamless config init --relay HOST:PORT --x25519 HEX --kem HEX`"


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/seamless``; a relative or empty XDG_CONFIG_HOME is ignored, as the spec says."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "seamless"


def config_path() -> Path:
    return config_dir() / "config.toml"


def identity_path() -> Path:
    """The client's own Seam identity; the relay binds claimed names to its public key."""
    return config_dir() / "identity.json"


def _check_token(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_TOKEN or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"must be 1 to {MAX_TOKEN} printable characters without spaces")
    return value


def _clean_hex(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _blame_key(x25519_hex: str, kem_hex: str, fields: tuple[str, str]) -> None:
    """Validate both keys with seam's own parser; blame the field its message is about."""
    try:
        PublicKeys.from_hex(x25519_hex, kem_hex)
    except ValueError as exc:
        # from_hex checks the X25519 key first and names it in its message.
        field = fields[0] if str(exc).startswith("x25519") else fields[1]
        raise FieldError(field, str(exc)) from None


class ClientFile(BaseModel):
    """The contents of ``config.toml``: which relay to use and how to recognise it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    relay: str
    x25519: str
    kem: str
    token: str | None = None

    @field_validator("relay")
    @classmethod
    def _relay(cls, value: str) -> str:
        address = HostPort.parse(value, default_host=None)
        if address.port == 0:
            raise ValueError(f"port must be between 1 and 65535 (got {value!r})")
        return str(address)

    @field_validator("x25519", "kem", mode="before")
    @classmethod
    def _hex(cls, value: Any) -> Any:
        return _clean_hex(value)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        return _check_token(value)

    @model_validator(mode="after")
    def _keys(self) -> ClientFile:
        _blame_key(self.x25519, self.kem, ("x25519", "kem"))
        return self


class ClientSettings(BaseModel):
    """Everything one tunnel needs; built by :func:`build_client_settings`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    relay_host: str
    relay_port: int
    x25519_hex: str
    kem_hex: str
    token: str | None = None
    local_host: str = "127.0.0.1"
    kind: TunnelKind
    local_port: int
    subdomain: str | None = None
    hostname: str | None = None  # http: a custom domain, on relays run with --allow-custom-domains
    remote_port: int | None = None  # tcp/udp: 0 lets the relay pick
    quiet: bool = False
    congestion: CongestionName = "bbr"
    cipher: CipherName = "auto"
    fec: str = "off"  # FEC repairs the client sends: "off", "auto" or "K,M" (docs/fec.md)
    identity_path: Path = Field(default_factory=identity_path)

    @field_validator("relay_host", "local_host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value)

    @field_validator("relay_port", "local_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"must be between 1 and 65535 (got {value})")
        return value

    @field_validator("remote_port")
    @classmethod
    def _remote_port(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 65535:
            raise ValueError(f"must be between 0 and 65535, 0 letting the relay pick (got {value})")
        return value

    @field_validator("x25519_hex", "kem_hex", mode="before")
    @classmethod
    def _hex(cls, value: Any) -> Any:
        return _clean_hex(value)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        return _check_token(value)

    @field_validator("subdomain")
    @classmethod
    def _subdomain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        label = value.strip().lower()
        if not LABEL_RE.match(label):
            raise ValueError(f"must be a DNS label: letters, digits and '-', at most 63 (got {value!r})")
        return label

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip().lower().rstrip(".")
        if not is_hostname(name) or "." not in name:
            raise ValueError(f"must be a full DNS name such as app.example.com (got {value!r})")
        return name

    @field_validator("congestion", "cipher", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return _clean_hex(value)

    @field_validator("fec")
    @classmethod
    def _fec(cls, value: str) -> str:
        return str(parse_fec_spec(value))  # ValueError names the accepted forms

    @model_validator(mode="after")
    def _consistent(self) -> ClientSettings:
        _blame_key(self.x25519_hex, self.kem_hex, ("x25519_hex", "kem_hex"))
        if self.kind == "http" and self.remote_port is not None:
            raise FieldError("remote_port", "only tcp and udp tunnels take a remote port")
        if self.kind != "http" and self.subdomain is not None:
            raise FieldError("subdomain", "only http tunnels take a subdomain")
        if self.kind != "http" and self.hostname is not None:
            raise FieldError("hostname", "only http tunnels take a hostname")
        if self.subdomain is not None and self.hostname is not None:
            raise FieldError("hostname", "give --subdomain or --hostname, not both")
        if self.kind != "http" and self.remote_port is None:
            raise FieldError("remote_port", f"required for {self.kind} tunnels (0 lets the relay pick)")
        return self

    @property
    def server_keys(self) -> PublicKeys:
        """The relay's pinned keys, parsed."""
        return PublicKeys.from_hex(self.x25519_hex, self.kem_hex)


# Which command-line spelling to blame for each field.
_FLAGS = {
    "relay": "--relay",
    "relay_host": "--relay",
    "relay_port": "--relay",
    "x25519": "--x25519",
    "x25519_hex": "--x25519",
    "kem": "--kem",
    "kem_hex": "--kem",
    "token": "--token",
    "local_host": "--local-host",
    "kind": "COMMAND",
    "local_port": "PORT",
    "subdomain": "--subdomain",
    "hostname": "--hostname",
    "remote_port": "--remote-port",
    "quiet": "--quiet",
    "congestion": "--congestion",
    "cipher": "--cipher",
    "fec": "--fec",
    "identity_path": "identity",
}


def _to_config_error(exc: ValidationError, suffix: str = "") -> ConfigError:
    field, message = explain(exc.errors()[0])
    return ConfigError(_FLAGS.get(field or "", field or "settings"), message + suffix)


# -- the config file ----------------------------------------------------------------------------


def _toml_string(value: str) -> str:
    """A TOML basic string (TOML 1.0 section "String")."""
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = []
    for ch in value:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def save_client_file(client_file: ClientFile, path: Path | None = None) -> Path:
    """Write ``client_file`` atomically, 0600 from the first byte, in a 0700 directory; returns the path."""
    path = config_path() if path is None else path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    lines = ["# Written by `seamless config init`; the relay's pinned Seam public keys."]
    lines += [
        f"{key} = {_toml_string(value)}"
        for key, value in client_file.model_dump().items()
        if value is not None
    ]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_client_file(path: Path | None = None) -> ClientFile | None:
    """The saved relay details, or None when there is no file.

    Raises:
        ConfigError: the file is unreadable, not TOML, has an unknown key or a bad value.
    """
    path = config_path() if path is None else path
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"invalid TOML ({exc}); fix it or {INIT_HINT}") from None
    unknown = sorted(set(data) - set(ClientFile.model_fields))
    if unknown:
        raise ConfigError(str(path), f"unknown key {unknown[0]!r} (known: relay, x25519, kem, token)")
    missing = sorted(set(ClientFile.model_fields) - set(data) - {"token"})
    if missing:
        raise ConfigError(_FLAGS[missing[0]], f"missing from {path}; {INIT_HINT}")
    try:
        return ClientFile.model_validate(data)
    except ValidationError as exc:
        raise _to_config_error(exc, f" (in {path}; {INIT_HINT})") from None


def clear_client_file(path: Path | None = None) -> bool:
    """Delete the saved relay details; False if there were none. The identity stays."""
    path = config_path() if path is None else path
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def make_client_file(relay: str, x25519: str, kem: str, token: str | None = None) -> ClientFile:
    """Validate what ``config init`` was given.

    Raises:
        ConfigError: naming the flag of the first bad value.
    """
    try:
        return ClientFile(relay=relay, x25519=x25519, kem=kem, token=token)
    except ValidationError as exc:
        raise _to_config_error(exc) from None


# -- merging flags over the file ----------------------------------------------------------------


def _required(flag: str, metavar: str, given: str | None, saved: str | None) -> str:
    value = given if given is not None else saved
    if value is None:
        raise ConfigError(flag, f"not given; pass {flag} {metavar}, or save the relay once: {INIT_HINT}")
    return value


def build_client_settings(
    kind: TunnelKind,
    local_port: int | str,
    *,
    stored: ClientFile | None,
    relay: str | None = None,
    x25519: str | None = None,
    kem: str | None = None,
    token: str | None = None,
    local_host: str | None = None,
    subdomain: str | None = None,
    hostname: str | None = None,
    remote_port: int | str | None = None,
    quiet: bool = False,
    congestion: str | None = None,
    cipher: str | None = None,
    fec: str | None = None,
    identity: Path | None = None,
) -> ClientSettings:
    """Flags (non-None arguments) over the saved file ``stored``, validated.

    Raises:
        ConfigError: naming the flag to fix; a missing relay or key also says how to save one.
    """
    relay = _required("--relay", "HOST:PORT", relay, stored.relay if stored else None)
    x25519 = _required("--x25519", "HEX", x25519, stored.x25519 if stored else None)
    kem = _required("--kem", "HEX", kem, stored.kem if stored else None)
    token = token if token is not None else (stored.token if stored else None)
    try:
        host, port = split_host_port(relay, default_host=None)
    except ValueError as exc:
        raise ConfigError("--relay", str(exc)) from None
    values: dict[str, Any] = {
        "relay_host": host,
        "relay_port": port,
        "x25519_hex": x25519,
        "kem_hex": kem,
        "token": token,
        "kind": kind,
        "local_port": local_port,
        "subdomain": subdomain,
        "hostname": hostname,
        "remote_port": remote_port,
        "quiet": quiet,
        "local_host": local_host,
        "congestion": congestion,
        "cipher": cipher,
        "fec": fec,
        "identity_path": identity,
    }
    try:
        return ClientSettings.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise _to_config_error(exc) from None
