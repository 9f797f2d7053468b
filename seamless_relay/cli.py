"""``seamless-relay``: the relay CLI (ingress and tunnels arrive with issue 3)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="seamless-relay",
    help="Run a Seamless relay: public HTTP/HTTPS/TCP/UDP ingress for clients behind NAT.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the version."""
    from importlib.metadata import version as pkg_version

    typer.echo(f"seamless-relay {pkg_version('seamless')}")


@app.command()
def keygen(path: str = typer.Argument(..., help="file to write the relay identity to (mode 0600)")) -> None:
    """Create a relay identity file and print its public keys."""
    from seam import Identity

    identity = Identity.load_or_create(path)
    typer.echo(f"seam-pubkey-x25519 {identity.public.x25519_hex}")
    typer.echo(f"seam-pubkey-kem {identity.public.kem_hex}")


def main() -> None:
    app()
