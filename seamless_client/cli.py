"""``seamless``: expose a local service through a relay; parses flags and calls the tunnel runtime.

The relay to use comes from the global options or from the file ``seamless
config init`` wrote; :func:`seamless_client.config.build_client_settings`
merges the two and names the flag in every error (exit status 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, NoReturn

import typer

from seamless_client.config import (
    ClientFile,
    TunnelKind,
    build_client_settings,
    clear_client_file,
    config_path,
    identity_path,
    load_client_file,
    make_client_file,
    save_client_file,
)
from seamless_relay.config import ConfigError

app = typer.Typer(
    name="seamless",
    help="Expose a local service through a Seamless relay, over the post-quantum Seam transport.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(
    help="Save, show or forget the relay to use (so tunnel commands need no relay flags).",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    relay: str | None = None
    x25519: str | None = None
    kem: str | None = None
    token: str | None = None
    local_host: str | None = None
    quiet: bool = False
    congestion: str | None = None
    cipher: str | None = None
    fec: str | None = None


def _fail(exc: ConfigError) -> NoReturn:
    typer.echo(f"Error: {exc}", err=True)
    raise typer.Exit(2)


def _globals(ctx: typer.Context) -> GlobalOptions:
    obj = ctx.find_object(GlobalOptions)
    return obj if obj is not None else GlobalOptions()


@app.callback()
def _options(
    ctx: typer.Context,
    relay: Annotated[
        str | None, typer.Option("--relay", metavar="HOST:PORT", help="the relay's Seam address")
    ] = None,
    x25519: Annotated[
        str | None, typer.Option("--x25519", metavar="HEX", help="the relay's X25519 key")
    ] = None,
    kem: Annotated[
        str | None, typer.Option("--kem", metavar="HEX", help="the relay's ML-KEM-768 key")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", metavar="TOKEN", envvar="SEAMLESS_TOKEN", help="relay access token"),
    ] = None,
    local_host: Annotated[
        str | None, typer.Option("--local-host", metavar="HOST", help="where the local service listens")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="print only the public address and errors")
    ] = False,
    congestion: Annotated[
        str | None,
        typer.Option("--congestion", metavar="newreno|cubic|bbr", help="Seam congestion controller"),
    ] = None,
    cipher: Annotated[
        str | None,
        typer.Option(
            "--cipher",
            metavar="auto|chacha20poly1305|aes256gcm",
            help="Seam AEAD (auto: AES-256-GCM where the CPU has AES)",
        ),
    ] = None,
    fec: Annotated[
        str | None,
        typer.Option(
            "--fec",
            metavar="off|auto|K,M",
            envvar="SEAMLESS_FEC",
            help="forward error correction for what the client sends",
        ),
    ] = None,
) -> None:
    """Options shared by every command; the relay ones override the saved config."""
    ctx.obj = GlobalOptions(relay, x25519, kem, token, local_host, quiet, congestion, cipher, fec)


def _run_tunnel(
    ctx: typer.Context,
    kind: TunnelKind,
    port: str,
    *,
    subdomain: str | None = None,
    hostname: str | None = None,
    remote_port: str | None = None,
) -> NoReturn:
    opts = _globals(ctx)
    try:
        settings = build_client_settings(
            kind,
            port,
            stored=load_client_file(),
            relay=opts.relay,
            x25519=opts.x25519,
            kem=opts.kem,
            token=opts.token,
            local_host=opts.local_host,
            subdomain=subdomain,
            hostname=hostname,
            remote_port=remote_port,
            quiet=opts.quiet,
            congestion=opts.congestion,
            cipher=opts.cipher,
            fec=opts.fec,
        )
    except ConfigError as exc:
        _fail(exc)

    from seamless_relay.logs import configure_logging

    configure_logging("warning" if settings.quiet else "info", "text")

    from seamless_client.tunnel import run

    raise typer.Exit(run(settings))


PortArg = Annotated[str, typer.Argument(metavar="PORT", help="the local port to expose", show_default=False)]
RemotePort = Annotated[
    str | None,
    typer.Option("--remote-port", metavar="N", help="public port on the relay; 0 lets the relay pick"),
]


@app.command()
def http(
    ctx: typer.Context,
    port: PortArg,
    subdomain: Annotated[
        str | None, typer.Option("--subdomain", metavar="NAME", help="ask for NAME.<relay domain>")
    ] = None,
    hostname: Annotated[
        str | None,
        typer.Option(
            "--hostname",
            metavar="DOMAIN",
            help="ask for a custom domain (the relay must allow them; point its DNS at the relay)",
        ),
    ] = None,
) -> None:
    """Expose a local HTTP service at a public URL."""
    _run_tunnel(ctx, "http", port, subdomain=subdomain, hostname=hostname)


@app.command()
def tcp(ctx: typer.Context, port: PortArg, remote_port: RemotePort = None) -> None:
    """Expose a local TCP port on a public relay port."""
    _run_tunnel(ctx, "tcp", port, remote_port=remote_port)


@app.command()
def udp(ctx: typer.Context, port: PortArg, remote_port: RemotePort = None) -> None:
    """Expose a local UDP port on a public relay port."""
    _run_tunnel(ctx, "udp", port, remote_port=remote_port)


@app.command()
def demo() -> None:
    """Run a relay, a tunnel and a demo page on this machine and print the public URL."""
    from seamless_client.demo import run

    raise typer.Exit(run())


@app.command()
def version() -> None:
    """Print the version."""
    from importlib.metadata import version as pkg_version

    typer.echo(f"seamless {pkg_version('seamless')}")


@app.command()
def transport_demo(size_mb: int = typer.Option(32, help="MiB to send")) -> None:
    """Run a Seam server and client on loopback and print the throughput."""
    import trio

    from seam.demo import run_demo

    trio.run(run_demo, size_mb, "chacha20poly1305", "bbr")


# -- config ---------------------------------------------------------------------------------------


def shorten(hex_key: str) -> str:
    """``0123abcd…89ef (64 hex)``: enough to compare by eye, short enough for a terminal."""
    return f"{hex_key[:8]}…{hex_key[-8:]} ({len(hex_key)} hex)"


def mask_token(token: str) -> str:
    """Show the first four characters and the length, or nothing of a short token."""
    return f"{token[:4]}…({len(token)} chars)" if len(token) >= 12 else "****"


def _need(flag: str, given: str | None, global_value: str | None) -> str:
    value = given if given is not None else global_value
    if value is None:
        _fail(ConfigError(flag, "required by `seamless config init`"))
    return value


@config_app.command("init")
def config_init(
    ctx: typer.Context,
    relay: Annotated[
        str | None, typer.Option("--relay", metavar="HOST:PORT", help="the relay's Seam address")
    ] = None,
    x25519: Annotated[
        str | None, typer.Option("--x25519", metavar="HEX", help="seam-pubkey-x25519 the relay printed")
    ] = None,
    kem: Annotated[
        str | None, typer.Option("--kem", metavar="HEX", help="seam-pubkey-kem the relay printed")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", metavar="TOKEN", help="relay access token")] = None,
) -> None:
    """Check and save the relay's address and keys (and a token) for later tunnels."""
    opts = _globals(ctx)  # `seamless --relay X config init` works too
    try:
        saved = make_client_file(
            _need("--relay", relay, opts.relay),
            _need("--x25519", x25519, opts.x25519),
            _need("--kem", kem, opts.kem),
            token if token is not None else opts.token,
        )
    except ConfigError as exc:
        _fail(exc)
    path = save_client_file(saved)
    typer.echo(f"saved {path}")


def _show(stored: ClientFile) -> None:
    typer.echo(f"config:   {config_path()}")
    typer.echo(f"relay:    {stored.relay}")
    typer.echo(f"x25519:   {shorten(stored.x25519)}")
    typer.echo(f"kem:      {shorten(stored.kem)}")
    typer.echo(f"token:    {mask_token(stored.token) if stored.token else '(none)'}")
    ident = identity_path()
    typer.echo(f"identity: {ident}" + ("" if ident.exists() else " (created on first connect)"))


@config_app.command("show")
def config_show() -> None:
    """Print the saved relay, with keys shortened and the token masked."""
    try:
        stored = load_client_file()
    except ConfigError as exc:
        _fail(exc)
    if stored is None:
        typer.echo(f"no config at {config_path()}; save one with `seamless config init`", err=True)
        raise typer.Exit(1)
    _show(stored)


@config_app.command("clear")
def config_clear() -> None:
    """Forget the saved relay (your Seam identity stays, so your names stay yours)."""
    path = config_path()
    typer.echo(f"removed {path}" if clear_client_file() else f"no config at {path}")


def main() -> None:
    app(prog_name="seamless")
