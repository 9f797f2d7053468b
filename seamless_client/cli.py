"""``seamless``: the tunnel client CLI (the tunnels themselves arrive with the relay)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="seamless",
    help="Expose a local service through a Seamless relay, over the post-quantum Seam transport.",
    no_args_is_help=True,
    add_completion=False,
)


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

    trio.run(run_demo, size_mb, "chacha20poly1305", "cubic")


def main() -> None:
    app()
