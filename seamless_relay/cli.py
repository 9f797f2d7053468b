"""``seamless-relay [OPTIONS]``: parse flags into a validated RelayConfig and run the relay.

Every option defaults to None so that an absent flag is visible; the merge
with ``SEAMLESS_*`` environment variables and the TOML file happens in
:func:`seamless_relay.config.build_relay_config`, which is also what names
the flag in every error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from seamless_relay.config import ConfigError, RelayConfig, build_relay_config, env_for, flag_for

app = typer.Typer(
    name="seamless-relay",
    help=(
        "Run a Seamless relay: public HTTP/HTTPS/TCP/UDP ingress for clients behind NAT. "
        "Every option can also come from the environment (SEAMLESS_SEAM_ADDR, ...) or from a TOML "
        "file (--config, keys named like the options); a flag beats the environment, which beats the file."
    ),
    add_completion=False,
    rich_markup_mode=None,  # plain click help: no rich boxes around our plain-text errors
)


def _opt(field: str, help: str, *, metavar: str | None = None, switch: bool = False) -> Any:
    """A None-default option for ``field`` whose help shows the default and the environment variable."""
    default = RelayConfig.model_fields[field].default
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif isinstance(default, list):
        shown = ",".join(str(item) for item in default) or "none"
    else:
        shown = "off" if default is None else str(default) or "none"
    names = f"{flag_for(field)}/--no-{flag_for(field)[2:]}" if switch else flag_for(field)
    return typer.Option(
        names,
        help=f"{help} (default: {shown}; env {env_for(field)})",
        metavar=metavar,
        show_default=False,
    )


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version as pkg_version

        typer.echo(f"seamless-relay {pkg_version('seamless')}")
        raise typer.Exit()


Text = str | None


@app.command(help=app.info.help)
def relay(
    ctx: typer.Context,
    seam_addr: Annotated[Text, _opt("seam_addr", "UDP address for Seam tunnels", metavar="HOST:PORT")] = None,
    http_addr: Annotated[
        Text, _opt("http_addr", "public HTTP address, or 'off'", metavar="HOST:PORT")
    ] = None,
    https_addr: Annotated[
        Text, _opt("https_addr", "public HTTPS address, or 'off'", metavar="HOST:PORT")
    ] = None,
    tcp_passthrough: Annotated[
        list[str] | None,
        _opt(
            "tcp_passthrough",
            "forward a relay TCP port to a fixed backend; repeatable",
            metavar="PORT:HOST:PORT",
        ),
    ] = None,
    tls_cert: Annotated[Text, _opt("tls_cert", "PEM certificate chain for HTTPS", metavar="FILE")] = None,
    tls_key: Annotated[Text, _opt("tls_key", "PEM private key for HTTPS", metavar="FILE")] = None,
    tls_self_signed: Annotated[
        bool | None,
        _opt("tls_self_signed", "serve HTTPS with a generated certificate", switch=True),
    ] = None,
    base_domain: Annotated[
        Text, _opt("base_domain", "tunnels get NAME.BASE_DOMAIN", metavar="DOMAIN")
    ] = None,
    auth_file: Annotated[
        Text, _opt("auth_file", "file of accepted client tokens, one a line", metavar="FILE")
    ] = None,
    store: Annotated[Text, _opt("store", "JSON file the relay keeps its state in", metavar="FILE")] = None,
    allow_custom_domains: Annotated[
        bool | None,
        _opt("allow_custom_domains", "let clients claim their own hostnames", switch=True),
    ] = None,
    reserved_subdomains: Annotated[
        Text, _opt("reserved_subdomains", "names no client may claim", metavar="A,B,...")
    ] = None,
    subdomain_prefix: Annotated[
        Text, _opt("subdomain_prefix", "prefix of random names", metavar="TEXT")
    ] = None,
    subdomain_length: Annotated[
        Text, _opt("subdomain_length", "length of random names, 4 to 32", metavar="N")
    ] = None,
    subdomain_grace: Annotated[
        Text,
        _opt("subdomain_grace", "seconds a released name stays its owner's", metavar="SECONDS"),
    ] = None,
    tunnel_keepalive: Annotated[
        Text,
        _opt(
            "tunnel_keepalive",
            "seconds of silence after which a tunnel is dead (keepalives go out at a third of it), up to 600",
            metavar="SECONDS",
        ),
    ] = None,
    cipher: Annotated[Text, _opt("cipher", "Seam AEAD", metavar="auto|chacha20poly1305|aes256gcm")] = None,
    congestion: Annotated[
        Text, _opt("congestion", "Seam congestion controller", metavar="newreno|cubic|bbr")
    ] = None,
    fec: Annotated[
        Text, _opt("fec", "forward error correction for what the relay sends", metavar="off|auto|K,M")
    ] = None,
    max_body_size: Annotated[
        Text,
        _opt("max_body_size", "largest HTTP request body, 0 = unlimited", metavar="BYTES"),
    ] = None,
    log_level: Annotated[Text, _opt("log_level", "log threshold", metavar="debug|info|warning|error")] = None,
    log_format: Annotated[Text, _opt("log_format", "log line format", metavar="text|json")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="TOML file of settings (env SEAMLESS_CONFIG)", metavar="FILE", dir_okay=False
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_version, is_eager=True)
    ] = False,
) -> None:
    cli_values = {name: value for name, value in ctx.params.items() if name not in ("config", "version")}
    try:
        settings = build_relay_config(cli_values, os.environ, config)
    except ConfigError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None

    from seamless_relay.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)

    from seamless_relay.server import run

    raise typer.Exit(run(settings))


def main() -> None:
    app(prog_name="seamless-relay")
