"""What every command prints besides its result: progress lines on stderr, unless asked to be quiet."""

from __future__ import annotations

import typer


def echo(msg: str, quiet: bool) -> None:
    """``msg`` on stderr (stdout stays for results: tables, JSON), unless ``quiet``."""
    if not quiet:
        typer.echo(msg, err=True)
