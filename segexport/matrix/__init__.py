"""``segexport matrix``: which architecture x encoder x target x precision builds work here.

Each cell is one ordinary build through :func:`segexport.pipeline.run_build`, then a short
timing of the bundle in its own runtime. A worker process builds a row's cells in turn,
sharing the row's model, eager references and fp32 ONNX graph: on this machine
(:mod:`~segexport.matrix.local`) or as a Ray task on a cluster (:mod:`~segexport.matrix.ray`).

Statuses: ``pass`` (✓ with the mask's max abs error), ``fail`` (parity failed), ``error``
(export error, crash, timeout), ``n/a`` (with the reason: decided by the planner, by the
model's construction probe for a whole row, or by the build refusing the input).

The package knows nothing of the command line: :func:`run_matrix` takes a
:class:`MatrixConfig` and returns a :class:`MatrixReport`. Modules, in import order:
``model`` (records), ``report`` (Markdown), ``plugins``, ``fingerprints``, ``plan``,
``worker`` (a row's cells in this process), ``local``, ``ray``, ``run``.
"""

from __future__ import annotations

from segexport.matrix.fingerprints import calib_fingerprint, cell_key, tool_versions
from segexport.matrix.local import LocalExecutor, LocalWorker, RowRun, default_jobs, threads_per_job
from segexport.matrix.model import Cell, CellResult, MatrixConfig, MatrixReport, RaySettings, RowJob
from segexport.matrix.plan import Plan, parse_arch_args, plan_matrix, resolve_arch_args, split_names
from segexport.matrix.plugins import load_plugins
from segexport.matrix.report import cell_text, format_markdown
from segexport.matrix.run import Executor, run_cells, run_matrix
from segexport.matrix.worker import run_cell

__all__ = [
    "Cell",
    "CellResult",
    "Executor",
    "LocalExecutor",
    "LocalWorker",
    "MatrixConfig",
    "MatrixReport",
    "Plan",
    "RaySettings",
    "RowJob",
    "RowRun",
    "calib_fingerprint",
    "cell_key",
    "cell_text",
    "default_jobs",
    "format_markdown",
    "load_plugins",
    "parse_arch_args",
    "plan_matrix",
    "resolve_arch_args",
    "run_cell",
    "run_cells",
    "run_matrix",
    "split_names",
    "threads_per_job",
    "tool_versions",
]
