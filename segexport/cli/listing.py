"""``segexport list``: the command function (registered on the app in ``segexport.cli``).

Only typer is imported here; torch and the runtimes load when the command runs.
"""

from __future__ import annotations

import typer

from segexport.errors import unknown


def list_command(what: str = typer.Argument(..., help="archs | encoders | targets")) -> None:
    """List the registered architectures, encoders or targets."""
    from segexport import names as builtin

    if what in ("archs", "architectures"):
        names = [*builtin.ARCHITECTURES, *(f"{a} (= {n})" for a, n in builtin.ARCHITECTURE_ALIASES.items())]
    elif what == "encoders":
        names = [*builtin.ENCODERS, "tu-<any timm model>"]
    elif what == "targets":
        names = list(builtin.TARGETS)
    else:
        raise unknown("list", what, ["archs", "encoders", "targets"])
    typer.echo("\n".join(names))
