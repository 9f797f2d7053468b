"""The relay's HTTPS certificates: self-signed generation, file reloads and SNI.

Theory of operation: a `CertificateStore` holds one immutable "current" pair
(the default certificate and the `ssl.SSLContext` built from it). The relay
calls `CertificateStore.context` each time it accepts a TCP connection, so
swapping the pair (on `reload`, usually driven by `watch`) changes what new
connections see while live ones keep the context they started with. Per-host
certificates (ACME, later) live in a copy-on-write map that the default
context's SNI callback consults during the handshake; they survive reloads of
the default certificate.

Python's `ssl` can only load a certificate and key from files, so every load
copies the already-validated material into a fresh private temporary directory
(on tmpfs when there is one), lets OpenSSL read it and removes it at once: the
private key never lingers on disk, and what OpenSSL loads is byte for byte what
was validated, even if the operator's files change in between.

Nothing here ever raises out of `reload` or `watch` because of a bad file:
the relay keeps serving the certificate it has and logs why.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import ssl
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

import trio
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateStore", "TlsConfigError", "describe", "generate_self_signed"]

logger = logging.getLogger("seamless_relay.tls")

SELF_SIGNED_VALIDITY = timedelta(days=90)
SELF_SIGNED_BACKDATE = timedelta(hours=1)  # tolerate clients whose clock is a little behind
SELF_SIGNED_RENEW_BEFORE = timedelta(days=30)  # regenerate once less than this validity remains
DEFAULT_WATCH_INTERVAL = 5.0  # seconds between file checks in `watch`
MINTED_CACHE_SIZE = 256  # per-name leaves kept for a single-label self-signed domain (oldest dropped first)

# Mozilla Server Side TLS "intermediate" TLS 1.2 suites (ECDHE, AEAD only); DHE is left out because we
# set no DH parameters. TLS 1.3 suites are OpenSSL's defaults, which `set_ciphers` does not touch.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
ALPN_PROTOCOLS = ["http/1.1"]  # the HTTPS ingress speaks HTTP/1.1 only

_LOOPBACK_IPS = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))

PathArg = str | os.PathLike[str]


class TlsConfigError(Exception):
    """Certificate or key material is missing, unreadable, malformed or mismatched.

    The message names the file (or the hostnames, for `CertificateStore.add_certificate`) so
    the CLI can print it as is and exit with status 2.
    """


# -- self-signed certificates -------------------------------------------------------------------------


def generate_self_signed(
    base_domain: str,
    *,
    now: datetime | None = None,
    valid_for: timedelta = SELF_SIGNED_VALIDITY,
) -> tuple[bytes, bytes]:
    """A throwaway ECDSA P-256 certificate for ``base_domain`` and its subdomains.

    For a relay without a real certificate (development, or before ACME has run). The SANs are
    ``base_domain`` and ``*.base_domain``; for ``localhost`` (or a ``*.localhost`` name, RFC 6761
    section 6.3) also ``localhost``, 127.0.0.1 and ::1. An IP address gets just that IP SAN.

    A single-label domain (``localhost``) is special: OpenSSL, and so curl and Python, never match a
    wildcard with fewer than two labels after it, so ``*.localhost`` covers nothing. For such a domain
    the certificate is also a CA (path length 0) that `CertificateStore.self_signed` uses to issue a
    leaf per SNI name on demand; clients still trust just this one certificate.

    Returns:
        ``(cert_pem, key_pem)``, the key as unencrypted PKCS#8.

    Raises:
        ValueError: ``base_domain`` is not a usable DNS name or IP address.
    """
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName]
    is_ca = False
    try:
        ip = ipaddress.ip_address(base_domain.strip())
    except ValueError:
        domain = _normalise_hostname(base_domain, allow_wildcard=False)
        sans = [x509.DNSName(domain), x509.DNSName(f"*.{domain}")]
        if domain == "localhost" or domain.endswith(".localhost"):
            if domain != "localhost":
                sans.append(x509.DNSName("localhost"))
            sans.extend(x509.IPAddress(loopback) for loopback in _LOOPBACK_IPS)
        common_name = domain
        is_ca = "." not in domain
    else:
        sans = [x509.IPAddress(ip)]
        common_name = str(ip)
    cert = _issue(
        common_name=common_name,
        sans=sans,
        public_key=key.public_key(),
        issuer=None,
        signing_key=key,
        not_before=now - SELF_SIGNED_BACKDATE,
        not_after=now + valid_for,
        is_ca=is_ca,
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pkcs8_pem(key)


def _issue(
    *,
    common_name: str,
    sans: list[x509.GeneralName],
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    signing_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    is_ca: bool,
) -> x509.Certificate:
    """A TLS server certificate, self-signed when ``issuer`` is None."""
    if len(common_name) > 64:  # RFC 5280 ub-common-name; the SANs carry the real names anyway
        common_name = "Seamless relay"
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Seamless relay (self-signed)"),
        ]
    )
    if issuer is None:
        issuer_name = name
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    else:
        issuer_name = issuer.subject
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        authority = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority, critical=False)
        .sign(signing_key, hashes.SHA256())
    )


def _pkcs8_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def describe(cert_pem: bytes) -> str:
    """One line for the boot log: subject, SANs, expiry and issuer of the leaf certificate.

    Raises:
        TlsConfigError: ``cert_pem`` holds no PEM certificate.
    """
    chain = _parse_certificates(cert_pem, "certificate")
    leaf = chain[0]
    names: list[str] = []
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        names.extend(san.get_values_for_type(x509.DNSName))
        names.extend(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    not_after = leaf.not_valid_after_utc
    expiry = f"not after {not_after:%Y-%m-%dT%H:%M:%SZ}"
    if not_after <= datetime.now(UTC):
        expiry += " (EXPIRED)"
    issuer = "self-signed" if leaf.issuer == leaf.subject else f"issuer {leaf.issuer.rfc4514_string()}"
    extra = f", chain of {len(chain)}" if len(chain) > 1 else ""
    return (
        f"subject {leaf.subject.rfc4514_string() or '(empty)'}, SANs {', '.join(names) or '(none)'}, "
        f"{expiry}, {issuer}{extra}"
    )


# -- the store -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Material:
    """Validated certificate chain and key, as read (``cert_pem``/``key_pem``) and parsed."""

    cert_pem: bytes
    key_pem: bytes
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes


@dataclass(frozen=True, slots=True)
class _Current:
    """What new connections get; replaced as a whole so readers never see a half-done reload."""

    material: _Material
    context: ssl.SSLContext


# (st_dev, st_ino, st_mtime_ns, st_size) of the cert and key files: an atomic rename changes the inode,
# an in-place rewrite the mtime or size.
_FileStamp = tuple[int, int, int, int]
_Signature = tuple[_FileStamp, _FileStamp]


class CertificateStore:
    """The TLS server contexts of the HTTPS ingress.

    Build it from files (``CertificateStore(cert_path, key_path)`` or `from_files`), from PEM bytes
    (`from_pem`) or as a self-signed certificate (`self_signed`, renewed by `reload` before it
    expires). Construction validates everything and raises `TlsConfigError`; afterwards nothing a
    file can contain makes the store raise, it keeps its last good certificate instead.

    The store is meant for one trio thread: `context`, `reload` and `add_certificate` are plain
    synchronous calls, and the SNI callback runs inside the handshake on that same thread.
    """

    def __init__(
        self,
        cert_path: PathArg | None = None,
        key_path: PathArg | None = None,
        *,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
    ) -> None:
        """Give either both file paths, or both PEM byte strings.

        Raises:
            TlsConfigError: a file is missing or unreadable, the material does not parse, the key does
                not match the certificate, or OpenSSL refuses the pair.
            ValueError: not exactly one of the two forms was given.
        """
        has_files = cert_path is not None or key_path is not None
        has_pem = cert_pem is not None or key_pem is not None
        if has_files == has_pem:
            raise ValueError("give either cert_path and key_path, or cert_pem and key_pem")
        self._hosts: dict[str, ssl.SSLContext] = {}
        self._self_signed_domain: str | None = None
        self._mint_under: str | None = None  # single-label self-signed domain whose subdomains get leaves
        self._minted: dict[str, ssl.SSLContext] = {}
        self._closed = False
        self._last_error: str | None = None
        self._signature: _Signature | None = None
        self._cert_path: Path | None = None
        self._key_path: Path | None = None
        if has_files:
            if cert_path is None or key_path is None:
                raise ValueError("give both cert_path and key_path")
            self._cert_path, self._key_path = Path(cert_path), Path(key_path)
            self._signature = _stat_files(self._cert_path, self._key_path)
            material = _read_files(self._cert_path, self._key_path)
        else:
            if cert_pem is None or key_pem is None:
                raise ValueError("give both cert_pem and key_pem")
            material = _parse_material(cert_pem, key_pem, cert_name="certificate", key_name="private key")
        name = str(self._cert_path) if self._cert_path is not None else "certificate"
        self._current = _Current(material, self._build_default(material, name))

    @classmethod
    def from_files(cls, cert_path: PathArg, key_path: PathArg) -> Self:
        """A store that `reload` keeps in step with the files (a full chain file is fine)."""
        return cls(cert_path, key_path)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> Self:
        """A store for material held in memory; `reload` has nothing to re-read."""
        return cls(cert_pem=cert_pem, key_pem=key_pem)

    @classmethod
    def self_signed(cls, base_domain: str, *, now: datetime | None = None) -> Self:
        """A store with a fresh `generate_self_signed` certificate, regenerated by `reload` near expiry.

        For a single-label domain (``localhost``) the store also issues, during the handshake, a leaf
        for each SNI name below it (``abc.localhost``), signed by the generated certificate, since no
        OpenSSL client would accept ``*.localhost``. Clients trust `cert_pem` either way.
        """
        cert_pem, key_pem = generate_self_signed(base_domain, now=now)
        store = cls(cert_pem=cert_pem, key_pem=key_pem)
        store._self_signed_domain = base_domain
        if _is_ca(store._current.material.chain[0]):
            store._mint_under = _normalise_hostname(base_domain, allow_wildcard=False)
        return store

    # -- what the relay uses -------------------------------------------------------------------------

    def context(self) -> ssl.SSLContext:
        """The server context for a connection accepted now; later reloads do not affect it."""
        return self._current.context

    @property
    def cert_pem(self) -> bytes:
        """The default certificate (chain) currently served, as read; for `describe` in logs."""
        return self._current.material.cert_pem

    def add_certificate(self, hostnames: list[str], cert_pem: bytes, key_pem: bytes) -> None:
        """Serve this certificate to clients whose SNI names one of ``hostnames``.

        A name may be a wildcard (``*.example.com``, matching one label). A later call for the same
        name replaces the earlier certificate (renewal). Takes effect for new handshakes, including
        those on contexts `context` returned before.

        Raises:
            TlsConfigError: the material does not parse, does not match, or OpenSSL refuses it.
            ValueError: ``hostnames`` is empty or holds a malformed name.
            RuntimeError: the store is closed.
        """
        if self._closed:
            raise RuntimeError("CertificateStore is closed")
        names = [_normalise_hostname(host, allow_wildcard=True) for host in hostnames]
        if not names:
            raise ValueError("add_certificate needs at least one hostname")
        label = f"certificate for {', '.join(names)}"
        material = _parse_material(cert_pem, key_pem, cert_name=label, key_name=f"private key for {names[0]}")
        context = _build_context(material, label)
        hosts = dict(self._hosts)
        hosts.update(dict.fromkeys(names, context))
        self._hosts = hosts  # one assignment: a concurrent handshake sees the old map or the new one
        logger.info("TLS %s: %s", label, describe(cert_pem))

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the certificate files if they changed (always with ``force``); True if the cert did.

        A file that is missing, broken or does not match its partner is logged as an error and the
        current certificate stays in place; the same failure is logged once, not on every poll, unless
        ``force`` asks again. A file-less self-signed store instead regenerates its certificate once
        less than `SELF_SIGNED_RENEW_BEFORE` of it remains.
        """
        if self._closed:
            return False
        if self._cert_path is None or self._key_path is None:
            return self._renew_self_signed_if_due(datetime.now(UTC))
        try:
            signature = _stat_files(self._cert_path, self._key_path)
            if signature == self._signature and not force:
                return False
            # Remember the stamps even if loading fails below: a broken file is reported once and retried
            # when it changes again (or on SIGHUP), not re-parsed every few seconds.
            self._signature = signature
            material = _read_files(self._cert_path, self._key_path)
            current = self._current.material
            if material.cert_pem == current.cert_pem and material.key_pem == current.key_pem:
                self._last_error = None
                return False
            context = self._build_default(material, str(self._cert_path))
        except TlsConfigError as exc:
            message = str(exc)
            if force or message != self._last_error:
                logger.error("TLS reload failed, still serving the previous certificate: %s", message)
            self._last_error = message
            return False
        self._current = _Current(material, context)
        self._last_error = None
        logger.info("TLS certificate reloaded from %s: %s", self._cert_path, describe(material.cert_pem))
        return True

    async def watch(
        self,
        *,
        interval: float = DEFAULT_WATCH_INTERVAL,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Call `reload` every ``interval`` seconds, and at once (forced) on SIGHUP; runs until cancelled.

        SIGHUP needs trio's signal receiver, which only works in the main thread (and not on Windows);
        without it the loop just polls, with a warning. ``task_status.started()`` is called once the
        receiver is installed, so a SIGHUP sent after ``nursery.start(store.watch)`` returns is caught
        rather than killing the process. An unexpected error in one reload is logged, never raised.
        """
        with ExitStack() as stack:
            signals = None
            sighup = getattr(signal, "SIGHUP", None)
            if sighup is not None:
                try:
                    signals = stack.enter_context(trio.open_signal_receiver(sighup))
                except (RuntimeError, ValueError) as exc:
                    logger.warning("TLS reload on SIGHUP unavailable (%s); polling every %s s", exc, interval)
            task_status.started()
            while True:
                forced = False
                with trio.move_on_after(interval):
                    if signals is None:
                        await trio.sleep_forever()
                    await anext(signals)
                    forced = True
                    logger.info("SIGHUP: reloading the TLS certificate")
                try:
                    self.reload(force=forced)
                except Exception:  # "never crash the relay": a certificate bug must not end the ingress
                    logger.exception("TLS reload failed unexpectedly; still serving the previous certificate")

    def close(self) -> None:
        """Stop reloading and refuse new per-host certificates; idempotent.

        No key material is left on disk between loads, so there is nothing to delete; contexts already
        handed out (and `context`) keep working so in-flight accepts do not fail during shutdown.
        """
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------

    def _build_default(self, material: _Material, name: str) -> ssl.SSLContext:
        context = _build_context(material, name)
        context.sni_callback = self._select_certificate
        return context

    def _select_certificate(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        """SNI callback: switch to a per-host context on an exact, then one-label wildcard, match.

        Failing that, under a single-label self-signed domain, to a leaf issued for this name. An
        exception here would abort the handshake, so an unexpected one is logged and the default served.
        """
        if server_name is None:
            return
        name = server_name.rstrip(".").lower()  # Python hands us the IDNA A-label form
        hosts = self._hosts
        chosen = hosts.get(name)
        if chosen is None and "." in name:
            chosen = hosts.get("*." + name.split(".", 1)[1])
        if chosen is None and self._mint_under is not None and name.endswith("." + self._mint_under):
            try:
                chosen = self._minted_context(name)
            except Exception:
                logger.exception("could not issue a self-signed leaf for %r; serving the default", name)
        if chosen is not None:
            ssl_object.context = chosen

    def _minted_context(self, name: str) -> ssl.SSLContext | None:
        """A context serving a leaf for ``name`` signed by the self-signed root (cached)."""
        cached = self._minted.get(name)
        if cached is not None:
            return cached
        try:
            name = _normalise_hostname(name, allow_wildcard=False)
        except ValueError:
            return None  # a malformed SNI name: the default certificate will do
        root = self._current.material
        root_key = root.key
        if not isinstance(root_key, ec.EllipticCurvePrivateKey):
            return None
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _issue(
            common_name=name,
            sans=[x509.DNSName(name)],
            public_key=leaf_key.public_key(),
            issuer=root.chain[0],
            signing_key=root_key,
            not_before=root.chain[0].not_valid_before_utc,
            not_after=root.chain[0].not_valid_after_utc,
            is_ca=False,
        )
        chain = (leaf, root.chain[0])
        leaf_pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)
        context = _build_context(_Material(leaf_pem, _pkcs8_pem(leaf_key), chain, leaf_key), name)
        minted = dict(self._minted)
        if len(minted) >= MINTED_CACHE_SIZE:
            del minted[next(iter(minted))]
        minted[name] = context
        self._minted = minted
        return context

    def _renew_self_signed_if_due(self, now: datetime) -> bool:
        domain = self._self_signed_domain
        if domain is None:
            return False
        leaf = self._current.material.chain[0]
        if leaf.not_valid_after_utc - now > SELF_SIGNED_RENEW_BEFORE:
            return False
        cert_pem, key_pem = generate_self_signed(domain, now=now)
        material = _parse_material(cert_pem, key_pem, cert_name="certificate", key_name="private key")
        self._current = _Current(material, self._build_default(material, "self-signed certificate"))
        self._minted = {}  # issued by the old root, which clients will stop trusting
        logger.warning(
            "self-signed TLS certificate renewed (clients pinning the old one need the new one): %s",
            describe(cert_pem),
        )
        return True


# -- helpers -------------------------------------------------------------------------------------------


def _new_server_context() -> ssl.SSLContext:
    """The settings every server context shares, per-host ones included (OpenSSL takes ALPN from the
    context the SNI callback switched to)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


def _build_context(material: _Material, name: str) -> ssl.SSLContext:
    """A server context serving ``material``; `TlsConfigError` (naming ``name``) if OpenSSL refuses it."""
    context = _new_server_context()
    chain_pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in material.chain)
    key_pem = _pkcs8_pem(material.key)
    with tempfile.TemporaryDirectory(prefix="seamless-tls-", dir=_scratch_dir()) as scratch:
        cert_file = os.path.join(scratch, "cert.pem")
        key_file = os.path.join(scratch, "key.pem")
        _write_private(cert_file, chain_pem)
        _write_private(key_file, key_pem)
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise TlsConfigError(f"{name}: OpenSSL refused the certificate or key: {exc}") from exc
    return context


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _scratch_dir() -> str | None:
    """tmpfs when available, so the key copy never reaches a disk; else the default temp dir."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _stat_files(cert_path: Path, key_path: Path) -> _Signature:
    return _stat_one(cert_path, "certificate"), _stat_one(key_path, "private key")


def _stat_one(path: Path, what: str) -> _FileStamp:
    try:
        st = path.stat()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _read_files(cert_path: Path, key_path: Path) -> _Material:
    cert_pem = _read_one(cert_path, "certificate")
    key_pem = _read_one(key_path, "private key")
    return _parse_material(
        cert_pem,
        key_pem,
        cert_name=f"certificate file {cert_path}",
        key_name=f"private key file {key_path}",
        mismatch=f"private key file {key_path} does not match certificate file {cert_path}",
    )


def _read_one(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc


def _parse_certificates(cert_pem: bytes, cert_name: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise TlsConfigError(f"{cert_name}: no PEM certificate could be parsed ({exc})") from exc


def _parse_material(
    cert_pem: bytes, key_pem: bytes, *, cert_name: str, key_name: str, mismatch: str | None = None
) -> _Material:
    """Parse and cross-check a certificate chain (leaf first) and its private key."""
    chain = _parse_certificates(cert_pem, cert_name)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # cryptography's way of saying "this key needs a password"
        raise TlsConfigError(f"{key_name}: encrypted private keys are not supported") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TlsConfigError(f"{key_name}: no PEM private key could be parsed ({exc})") from exc
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    cert_public = chain[0].public_key().public_bytes(serialization.Encoding.DER, spki)
    key_public = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    if cert_public != key_public:
        raise TlsConfigError(mismatch or f"{key_name} does not match the {cert_name}")
    return _Material(cert_pem, key_pem, tuple(chain), key)


def _normalise_hostname(host: str, *, allow_wildcard: bool) -> str:
    """Lower-case A-label form without a trailing dot, as Python reports SNI server names."""
    name = host.strip().rstrip(".").lower()
    wildcard = allow_wildcard and name.startswith("*.")
    bare = name[2:] if wildcard else name
    try:
        bare = bare.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"not a valid hostname: {host!r}") from exc
    labels = bare.split(".")
    if not bare or any(not label or len(label) > 63 or "*" in label for label in labels) or len(bare) > 253:
        raise ValueError(f"not a valid hostname: {host!r}")
    return f"*.{bare}" if wildcard else bare
