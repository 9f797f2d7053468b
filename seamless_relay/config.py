"""The relay's validated configuration, merged from flags, environment and a TOML file.

Precedence is flag, then ``SEAMLESS_<FIELD>`` environment variable, then the
TOML file, then the model default. Every source passes the same kind of
values (strings are parsed by the model itself), so a value means the same
thing wherever it comes from, and every error names the flag spelling of the
field, plus where the bad value came from when it was not a flag.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from seam.config import CipherName
from seam.fec import parse_fec_spec

CongestionName = Literal["newreno", "cubic", "bbr"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]

ENV_PREFIX = "SEAMLESS_"
CONFIG_ENV = "SEAMLESS_CONFIG"
DEFAULT_HOST = "0.0.0.0"
LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)  # RFC 1035 section 2.3.1
PREFIX_RE = re.compile(r"^([a-z0-9][a-z0-9-]*)?$")
MAX_DNS_NAME = 253  # characters, RFC 1035 section 2.3.4 less the trailing dot
MAX_PREFIX = 20  # characters; with the longest random part the label stays under 63
OFF_WORDS = frozenset({"off", "none"})
PATH_FIELDS = frozenset({"tls_cert", "tls_key", "auth_file", "store"})


class ConfigError(Exception):
    """A setting was missing or invalid; ``str()`` is ready for ``Error: ...`` on stderr."""

    def __init__(self, field_flag: str, message: str) -> None:
        super().__init__(f"{field_flag}: {message}")
        self.field_flag = field_flag
        self.message = message


class FieldError(ValueError):
    """Raised inside a model validator to blame one field (pydantic gives those errors no location)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def flag_for(field: str) -> str:
    """``seam_addr`` -> ``--seam-addr``."""
    return "--" + field.replace("_", "-")


def env_for(field: str) -> str:
    """``seam_addr`` -> ``SEAMLESS_SEAM_ADDR``."""
    return ENV_PREFIX + field.upper()


# -- addresses ----------------------------------------------------------------------------------


def is_hostname(text: str) -> bool:
    """A DNS name made of RFC 1035 labels (case-insensitive, trailing dot allowed)."""
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= MAX_DNS_NAME and all(LABEL_RE.match(label) for label in name.split("."))


def check_host(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not is_hostname(host):
            raise ValueError(f"{host!r} is not a valid hostname or IP address") from None
    return host


def _check_port(port: int, *, low: int = 0) -> int:
    if not low <= port <= 65535:
        raise ValueError(f"port must be between {low} and 65535 (got {port})")
    return port


def split_host_port(text: str, *, default_host: str | None = DEFAULT_HOST) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[v6]:PORT`` or (when ``default_host`` is set) ``:PORT``.

    Raises:
        ValueError: with a message that quotes the input.
    """
    forms = "HOST:PORT or [IPv6]:PORT" + (" or :PORT" if default_host is not None else "")
    bad = ValueError(f"expected {forms} (got {text!r})")
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise bad
        port_text = rest[1:]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address (got {text!r})") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise bad
        if ":" in host:
            raise ValueError(f"an IPv6 address needs brackets, e.g. [::1]:{port_text} (got {text!r})")
        if not host:
            if default_host is None:
                raise bad
            host = default_host
    if not port_text.isdigit():
        raise ValueError(f"port must be a number (got {text!r})")
    return check_host(host), _check_port(int(port_text))


class HostPort(BaseModel):
    """A bind or connect address; parses from ``"HOST:PORT"``, ``"[v6]:PORT"`` or ``":PORT"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            host, port = split_host_port(data)
            return {"host": host, "port": port}
        return data

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        return check_host(value)

    @field_validator("port")
    @classmethod
    def _valid_port(cls, value: int) -> int:
        return _check_port(value)

    @classmethod
    def parse(cls, text: str, *, default_host: str | None = DEFAULT_HOST) -> HostPort:
        """Parse text; ``default_host=None`` makes the host mandatory (for addresses we connect to)."""
        host, port = split_host_port(text, default_host=default_host)
        return cls(host=host, port=port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Passthrough(BaseModel):
    """A raw TCP port on the relay forwarded to a fixed backend: ``"LISTEN_PORT:HOST:PORT"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen_port: int
    backend: HostPort

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        listen, _, rest = data.strip().partition(":")
        if not listen.isdigit() or not rest:
            raise ValueError(f"expected LISTEN_PORT:HOST:PORT, e.g. 2222:10.0.0.5:22 (got {data!r})")
        return {"listen_port": int(listen), "backend": HostPort.parse(rest, default_host=None)}

    @field_validator("listen_port")
    @classmethod
    def _valid_listen_port(cls, value: int) -> int:
        return _check_port(value)

    @field_validator("backend")
    @classmethod
    def _backend_port(cls, value: HostPort) -> HostPort:
        _check_port(value.port, low=1)
        return value

    def __str__(self) -> str:
        return f"{self.listen_port}:{self.backend}"


def _overlap(a: str, b: str) -> bool:
    """Whether two bind hosts can clash: the same host, or either one a wildcard."""
    return a == b or {a, b} & {"0.0.0.0", "::", ""} != set()


# -- field checks -------------------------------------------------------------------------------


def _int_between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} (got {value})")
        return value

    return AfterValidator(check)


def _seconds(*, positive: bool, high: float | None) -> AfterValidator:
    def check(value: float) -> float:
        bound = "> 0" if positive else ">= 0"
        if high is not None:
            bound += f" and <= {high:g}"
        ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
        if not ok or (high is not None and value > high):
            raise ValueError(f"must be {bound} seconds (got {value:g})")
        return value

    return AfterValidator(check)


def _non_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"must be >= 0 (got {value})")
    return value


def _split_commas(value: Any) -> Any:
    """``"a,b"`` or ``["a,b", "c"]`` -> ``["a", "b", "c"]``; flags, env and TOML may all use commas."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            out.extend(part.strip() for part in item.split(",") if part.strip())
        else:
            out.append(item)
    return out


def _readable_file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist or is not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    return path


def load_tokens(path: str | Path) -> frozenset[str]:
    """Read the relay's accepted client tokens: one a line, ``#`` starts a comment.

    Raises:
        OSError: the file cannot be read.
        ValueError: a line holds whitespace inside a token, or the file holds no token at all.
    """
    path = Path(path)
    tokens: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        token = line.split("#", 1)[0].strip()
        if not token:
            continue
        if any(ch.isspace() for ch in token):
            raise ValueError(f"{path}:{number}: a token cannot contain whitespace")
        tokens.add(token)
    if not tokens:
        raise ValueError(f"{path}: no tokens (put one token per line; '#' starts a comment)")
    return frozenset(tokens)


class RelayConfig(BaseModel):
    """Everything the relay runtime needs; immutable once validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seam_addr: HostPort = HostPort(host=DEFAULT_HOST, port=4443)  # UDP
    http_addr: HostPort | None = HostPort(host=DEFAULT_HOST, port=8080)
    https_addr: HostPort | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False
    base_domain: str = "localhost"
    auth_file: Path | None = None
    store: Path = Path("seamless-relay.json")
    allow_custom_domains: bool = False
    reserved_subdomains: list[str] = ["www", "admin", "api", "relay"]
    subdomain_prefix: str = ""
    subdomain_length: Annotated[int, _int_between(4, 32)] = 8
    subdomain_grace: Annotated[float, _seconds(positive=False, high=None)] = 300.0
    tunnel_keepalive: Annotated[float, _seconds(positive=True, high=600)] = 30.0
    cipher: CipherName = "auto"
    congestion: CongestionName = "bbr"
    fec: str = "off"  # FEC repairs the relay sends to clients: "off", "auto" or "K,M" (docs/fec.md)
    max_body_size: Annotated[int, AfterValidator(_non_negative)] = 10 * 1024 * 1024  # bytes, 0 = unlimited
    tcp_passthrough: list[Passthrough] = []
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"

    @field_validator("http_addr", "https_addr", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        if value is False or (isinstance(value, str) and value.strip().lower() in OFF_WORDS):
            return None
        return value

    @field_validator(*PATH_FIELDS, mode="before")
    @classmethod
    def _expand_user(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str) and value else value

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _tls_file(cls, value: Path | None) -> Path | None:
        return None if value is None else _readable_file(value)

    @field_validator("auth_file")
    @classmethod
    def _auth_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        _readable_file(value)
        try:
            load_tokens(value)
        except (OSError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("store")
    @classmethod
    def _store(cls, value: Path) -> Path:
        if value.is_dir():
            raise ValueError(f"{str(value)!r} is a directory; give a file path")
        return value

    @field_validator("base_domain")
    @classmethod
    def _base_domain(cls, value: str) -> str:
        name = value.strip().lower().rstrip(".")
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            raise ValueError(f"must be a DNS name, not an IP address (got {value!r})")
        if not is_hostname(name):
            raise ValueError(f"must be a DNS name like tunnels.example.com (got {value!r})")
        return name

    @field_validator("reserved_subdomains", "tcp_passthrough", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("reserved_subdomains")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        names = [name.lower() for name in value]
        for name in names:
            if not LABEL_RE.match(name):
                raise ValueError(f"{name!r} is not a DNS label (letters, digits and '-', at most 63)")
        return list(dict.fromkeys(names))

    @field_validator("subdomain_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        prefix = value.strip().lower()
        if len(prefix) > MAX_PREFIX or not PREFIX_RE.match(prefix):
            raise ValueError(
                f"must be at most {MAX_PREFIX} of a-z, 0-9 and '-', not starting with '-' (got {value!r})"
            )
        return prefix

    @field_validator("cipher", "congestion", "log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("fec")
    @classmethod
    def _fec(cls, value: str) -> str:
        return str(parse_fec_spec(value))  # ValueError names the accepted forms

    @model_validator(mode="after")
    def _cross_checks(self) -> RelayConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing, given = ("tls_key", "tls_cert") if self.tls_key is None else ("tls_cert", "tls_key")
            raise FieldError(missing, f"needed because {flag_for(given)} is given (the two go together)")
        if self.tls_self_signed and self.tls_cert is not None:
            raise FieldError("tls_self_signed", "conflicts with --tls-cert/--tls-key; give one or the other")
        if self.https_addr is not None and self.tls_cert is None and not self.tls_self_signed:
            raise FieldError("https_addr", "needs --tls-cert and --tls-key, or --tls-self-signed")
        # (host, TCP port, field); passthrough ports listen on the Seam host, like per-tunnel ports.
        tcp: list[tuple[str, int, str]] = [
            (addr.host, addr.port, name)
            for name, addr in (("http_addr", self.http_addr), ("https_addr", self.https_addr))
            if addr is not None
        ]
        tcp += [(self.seam_addr.host, rule.listen_port, "tcp_passthrough") for rule in self.tcp_passthrough]
        for i, (host, port, field) in enumerate(tcp):
            for other_host, other_port, other in tcp[:i]:
                if port != 0 and port == other_port and _overlap(host, other_host):
                    raise FieldError(field, f"TCP port {port} is already used by {flag_for(other)}")
        return self


FIELDS: tuple[str, ...] = tuple(RelayConfig.model_fields)


# -- merging sources ----------------------------------------------------------------------------


def _got(details: ErrorDetails) -> str:
    value = details.get("input")
    return "" if isinstance(value, dict) else f" (got {value!r})"


_PHRASES = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_type": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list or a comma-separated string",
    "path_type": "must be a file path",
    "model_type": "must be a string like HOST:PORT",
    "model_attributes_type": "must be a string like HOST:PORT",
}


def explain(details: ErrorDetails) -> tuple[str | None, str]:
    """The field to blame (None when pydantic gives no location) and a one-line message."""
    error = details.get("ctx", {}).get("error")
    if isinstance(error, FieldError):
        return error.field, str(error)
    loc = details["loc"]
    field = str(loc[0]) if loc else None
    if details["type"] == "value_error" and isinstance(error, BaseException):
        return field, str(error)
    if details["type"] == "literal_error":
        return field, f"must be {details.get('ctx', {}).get('expected')}" + _got(details)
    if details["type"] in _PHRASES:
        return field, _PHRASES[details["type"]] + _got(details)
    return field, details["msg"][:1].lower() + details["msg"][1:] + _got(details)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file as a dict; unreadable or malformed files raise ConfigError on ``--config``."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("--config", f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError("--config", f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", f"{path}: invalid TOML: {exc}") from None


def _file_values(path: Path) -> dict[str, tuple[Any, str]]:
    """Field -> (value, source label); relative paths count from the file's directory."""
    values: dict[str, tuple[Any, str]] = {}
    for key, value in read_toml(path).items():
        field = key.replace("-", "_")
        if field not in RelayConfig.model_fields:
            close = difflib.get_close_matches(field, FIELDS, n=1)
            hint = f"; did you mean {close[0].replace('_', '-')!r}?" if close else ""
            raise ConfigError("--config", f"{path}: unknown key {key!r}{hint}")
        if field in values:
            raise ConfigError("--config", f"{path}: key {key!r} is given twice (as '_' and '-' spellings)")
        if field in PATH_FIELDS and isinstance(value, str) and value:
            file_path = Path(value).expanduser()
            value = str(file_path if file_path.is_absolute() else path.parent / file_path)
        values[field] = (value, f"from {path}, key {key!r}")
    return values


def build_relay_config(
    cli_values: Mapping[str, object], environ: Mapping[str, str], config_path: Path | None
) -> RelayConfig:
    """Merge flag > ``SEAMLESS_*`` env > TOML file > default and validate once.

    ``cli_values`` maps field names to flag values; ``None`` (or an empty list, for
    repeatable flags) means the flag was not given. ``config_path`` falls back to
    ``$SEAMLESS_CONFIG``.

    Raises:
        ConfigError: naming the flag spelling of the first bad field.
    """
    unknown = set(cli_values) - set(FIELDS)
    if unknown:
        raise ValueError(f"not RelayConfig fields: {sorted(unknown)}")  # a bug in the caller, not user input
    if config_path is None and environ.get(CONFIG_ENV):
        config_path = Path(environ[CONFIG_ENV]).expanduser()
    merged = _file_values(config_path) if config_path is not None else {}
    for field in FIELDS:
        if env_for(field) in environ:
            merged[field] = (environ[env_for(field)], f"from environment variable {env_for(field)}")
        value = cli_values.get(field)
        if value is not None and value != [] and value != ():
            merged[field] = (value, "")
    try:
        return RelayConfig.model_validate({field: value for field, (value, _) in merged.items()})
    except ValidationError as exc:
        blamed, message = explain(exc.errors()[0])
        if blamed is None:
            raise ConfigError("--config", message) from None
        source = merged.get(blamed, (None, ""))[1]
        raise ConfigError(flag_for(blamed), f"{message} ({source})" if source else message) from None
