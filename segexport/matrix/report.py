"""The matrix as text: the Markdown table with its legend, progress lines and one-line reasons."""

from __future__ import annotations

from segexport.errors import SegexportError, first_line, squeeze
from segexport.matrix.model import BENCH_BUDGET_S, CellResult, MatrixReport

MAX_TABLE_REASON = 80


def one_line(exc: BaseException) -> str:
    """:func:`~segexport.errors.first_line`, with the type where the message alone would not say what failed, cut to 300."""
    if isinstance(exc, SegexportError) or not str(exc).strip():
        return first_line(exc)[:300]
    return f"{type(exc).__name__}: {first_line(exc)}"[:300]


def short(text: str, limit: int) -> str:
    """``text`` on one line, safe inside a Markdown table cell, cut to ``limit`` characters."""
    return squeeze(text.replace("|", "\\|"), limit)


def _mask_figures(result: CellResult) -> str:
    mask = result.mask_parity or {}
    text = f"{mask['max_abs']:.0e}" if mask.get("max_abs") is not None else "?"
    if result.cell.precision != "fp32" and mask.get("agreement") is not None:
        text += f" · {mask['agreement']:.2%}"
    return text


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def cell_text(result: CellResult, limit: int = MAX_TABLE_REASON) -> str:
    """The Markdown table text of one cell: ``✓ 3e-06 · 1.2 ms``, ``✗ reason`` or ``n/a (reason)``."""
    reason = short(result.reason or "", limit)
    if result.status == "pass":
        text = f"✓ {_mask_figures(result)}"
        if result.latency_ms:
            text += f" · {_ms(result.latency_ms['median'])} ms"
        return text
    if result.status == "fail":
        return f"✗ {reason}" if reason else f"✗ parity {_mask_figures(result)}"
    if result.status == "error":
        return f"✗ error: {reason}"
    return f"n/a ({reason})"


def format_markdown(report: MatrixReport) -> str:
    """Rows architecture x encoder, columns target/precision, then what did not apply, the legend, counts and versions.

    A row whose model refuses the encoder and a column that applies to no shown row hold
    nothing but ``n/a``: they are listed under the table with their reasons instead.
    """
    by = {(r.cell.row, r.cell.column): r for r in report.cells}
    rows = [(a, e) for a in report.archs for e in report.encoders]
    refused = {row: by[(row, col)].reason for row in rows for col in report.columns
               if (row, col) in by and by[(row, col)].status == "n/a" and by[(row, col)].stage == "model"}  # fmt: skip
    shown_rows = [row for row in rows if row not in refused]
    columns = [col for col in report.columns if any((row, col) not in by or by[(row, col)].status != "n/a" for row in shown_rows)]
    head = ["arch", "encoder", *[f"{t} {p}" for t, p in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in shown_rows:
        texts = [cell_text(by[(row, col)]) if (row, col) in by else "…" for col in columns]
        lines.append("| " + " | ".join([*row, *texts]) + " |")
    hidden = [col for col in report.columns if col not in columns]
    if hidden or refused:
        lines.append("")
    for col in hidden:
        reasons = sorted({short(by[(row, col)].reason or "", MAX_TABLE_REASON) for row in shown_rows if (row, col) in by})
        lines.append(f"- {col[0]} {col[1]}: n/a ({'; '.join(reasons) or 'no row applies'})")
    for (arch, encoder), reason in refused.items():
        lines.append(f"- {arch} / {encoder}: n/a ({short(reason or '', 2 * MAX_TABLE_REASON)})")
    counts = report.summary()
    lines += [
        "",
        _legend(report) + ".",
        f"{len(report.cells)} cells: {counts['pass']} ✓, {counts['fail']} ✗ parity, {counts['error']} error, {counts['n/a']} n/a.",
        "Versions: " + ", ".join(f"{k} {v or '—'}" for k, v in report.versions.items()) + ".",
    ]
    return "\n".join(lines)


def time_text(report: MatrixReport) -> str:
    """Where the run's time went, on one line: wall time, then the worker seconds of the cells built, by build step."""
    steps = report.time_by_step()
    parts = ", ".join(f"{name} {seconds:.0f}" for name, seconds in steps.items() if name != "cells" and seconds >= 0.5)
    built = sum(r.cell_s is not None and not r.resumed for r in report.cells)
    return f"matrix: {report.wall_s / 60:.1f} min wall; the {built} cells built took {steps['cells']:.0f} s in their workers ({parts})"


def _legend(report: MatrixReport) -> str:
    s = report.settings
    trained = s.get("checkpoints") or {}
    weights = f"trained weights ({len(trained)} rows, from --checkpoints), random elsewhere" if trained else "random weights"
    legend = (f"Input 1x3x{s['height']}x{s['width']}, {s.get('classes', 1)} class{'es' * (s.get('classes', 1) != 1)}, {weights}. "
              "✓ max abs error of the mask against eager PyTorch (fp16/int8 also: class agreement)")
    if not s["iters"]:
        return legend
    threads = s["threads_per_job"]
    legend += (f" · median latency of up to {s['iters']} runs (fewer past {BENCH_BUDGET_S:g} s) in the target's runtime "
               f"on CPU with {threads} thread{'s' * (threads != 1)}"
               + ("; trt on CUDA" if any(r.cell.target == "trt" and r.latency_ms for r in report.cells) else ""))
    if s["jobs"] > 1:
        legend += f", measured while up to {s['jobs']} cells ran in parallel"
    untimed = sorted({r.cell.target for r in report.cells if r.status == "pass" and not r.latency_ms and r.bench_error})
    if untimed:
        why = next(r.bench_error for r in report.cells if r.cell.target == untimed[0] and r.bench_error)
        legend += f"; not timed here: {', '.join(untimed)} ({short(why, 100).rstrip('.')})"
    return legend


def progress_text(result: CellResult) -> str:
    """One line for the progress stream: mark, cell, figures or reason, time."""
    mark = {"pass": "✓", "fail": "✗", "error": "✗", "n/a": "n/a"}[result.status]
    text = f"{mark} {result.cell.label()}: "
    if result.status == "pass":
        text += cell_text(result)[2:]
    else:
        text += short(result.reason or "", 160)
    if result.cell_s is not None:
        text += f" ({result.cell_s:.1f} s)"
    elif result.decided_by:
        text += f" (as {result.decided_by})"
    return text
