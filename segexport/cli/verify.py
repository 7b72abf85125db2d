"""``segexport verify``: the command function (registered on the app in ``segexport.cli``).

Only typer is imported here; torch and the runtimes load when the command runs.
"""

from __future__ import annotations

import json
from typing import Optional

import typer


def verify(
    bundle: str = typer.Argument(..., help="Bundle directory."),
    expect_digest: Optional[str] = typer.Option(
        None, "--expect-digest", help="Refuse the bundle unless its manifest digest is this one (as `build` printed it)."
    ),
    locate: bool = typer.Option(
        False, "--locate", help="Also compare every layer with the eager model and print the first ones past tolerance."
    ),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="With --locate: the weights the bundle was built from."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check the manifest's digest and every file's sha256, then re-run parity under the stored policy.

    Exits 0 when everything holds, 2 when anything does not.
    """
    from segexport.pipeline import verify as run_verify

    result = run_verify(bundle, expect_digest=expect_digest)
    if locate and not result.bad_files:
        from segexport.locate import format_locate
        from segexport.locate import locate as run_locate

        typer.echo(format_locate(run_locate(bundle, checkpoint=checkpoint)), err=True)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "passed": result.passed,
                    "digest": result.digest,
                    "bad_files": result.bad_files,
                    "parity": result.report.to_dict() if result.report else None,
                },
                indent=2,
            )
        )
    elif result.bad_files:
        typer.echo(f"FAILED: files changed since the build: {', '.join(result.bad_files)}", err=True)
    else:
        verdict = "OK" if result.passed else "FAILED"
        typer.echo(f"{verdict}: {result.report.summary()} (digest {result.digest})", err=not result.passed)
    if not result.passed:
        raise typer.Exit(2)
