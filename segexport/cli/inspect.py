"""``segexport inspect``: the command function (registered on the app in ``segexport.cli``).

Only typer is imported here; torch and the runtimes load when the command runs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from segexport.manifest import Manifest


def inspect(bundle: str = typer.Argument(..., help="Bundle directory."), as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a bundle's manifest as a readable table."""
    from segexport.bundle import Bundle

    m = Bundle.load(bundle).manifest
    if as_json:
        typer.echo(json.dumps(m.to_json(), indent=2))
        return
    rows = _inspect_rows(m)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key.ljust(width)}  {value}")


def _inspect_rows(m: Manifest) -> list[tuple[str, str]]:
    n, p = m.normalization or {}, m.parity
    return [
        ("arch", m.arch),
        ("encoder", m.encoder),
        ("target", f"{m.target} ({m.runtime})"),
        ("device", "not recorded (format < 3)" if m.device is None else
                   f"{m.device.kind} ({m.device.describe()}){', compiled for it' if m.device.compiled else ''}"),
        ("precision", m.precision),
        ("artifact", m.artifact),
        *[(f"input {i.name}", f"{list(i.shape)} {i.dtype} {i.layout}") for i in m.inputs],
        *[(f"output {o.name}", f"{list(o.shape)} {o.dtype}") for o in m.outputs],
        ("normalization", f"mean {n.get('mean')} std {n.get('std')} range {n.get('input_range')}"),
        ("parity", f"{'passed' if p.passed else 'FAILED'} with {p.validated_with} (atol {p.policy.atol}, rtol {p.policy.rtol})"),
        *[(f"  {o.name}", f"max abs {o.max_abs:.3g}, cosine {o.cosine:.6f}" + (f", agreement {o.agreement:.4%}" if o.agreement is not None else "")) for o in p.outputs],
        ("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items())),
        ("created", str(m.created)),
        ("digest", m.digest or "(format 1: none)"),
    ]
