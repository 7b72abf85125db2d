"""The ``segexport`` command line.

Heavy modules (torch, onnxruntime, TensorRT) are imported inside the commands,
so ``segexport --help`` answers at once. Errors the user caused print one line
and exit 2; anything unexpected exits 1 and suggests ``--debug``. Each command is a
module of this package (build, verify, inspect, bench, listing, eval, matrix); this
one makes the app and turns errors into exit codes.
"""

from __future__ import annotations

import sys

import typer

from segexport import interrupts
from segexport.cli import bench as bench_command
from segexport.cli import build as build_command
from segexport.cli import eval as eval_command
from segexport.cli import inspect as inspect_command
from segexport.cli import listing
from segexport.cli import matrix as matrix_command
from segexport.cli import verify as verify_command
from segexport.errors import SegexportError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Export segmentation models to validated ONNX / TensorRT / TorchScript bundles.",
)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


app.command("build")(build_command.build)
app.command("verify")(verify_command.verify)
app.command("inspect")(inspect_command.inspect)
app.command("bench")(bench_command.bench)
app.command("list")(listing.list_command)
app.command("matrix")(matrix_command.matrix)
app.command("eval")(eval_command.eval_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on success, 2 for bad input and failed checks, 1 for bugs, 130 Ctrl-C, 143 SIGTERM.

    Both signals unwind (staging folders and locks are removed on the way out); see
    :mod:`segexport.interrupts` for how they wait out native code.
    """
    interrupts.install()
    try:
        code = app(args=argv, standalone_mode=False)
    except SegexportError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - sorted below: the CLI framework's usage errors, else a bug
        if not _is_usage_error(exc):
            if _state["debug"]:
                raise
            typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
            sys.exit(1)
        typer.echo(f"error: {_usage_line(exc, sys.argv[1:] if argv is None else argv)}", err=True)
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    # Without standalone mode click returns a command's `raise typer.Exit(n)` as n instead of exiting.
    sys.exit(code if isinstance(code, int) else 0)


def _is_usage_error(exc: Exception) -> bool:
    """A usage error of the CLI framework (typer ships its own click): it formats a message and carries an exit code."""
    return callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _usage_line(exc: Exception, argv: list[str]) -> str:
    """The CLI framework's usage error as one line that names the bad value."""
    message = exc.format_message()  # type: ignore[attr-defined]
    param = getattr(exc, "param", None)
    if isinstance(exc, typer.BadParameter) and param is not None:
        opts = list(getattr(param, "opts", []))
        value = None
        for i, arg in enumerate(argv):
            if arg in opts and i + 1 < len(argv):
                value = argv[i + 1]
            elif any(arg.startswith(f"{o}=") for o in opts):
                value = arg.partition("=")[2]
        name = opts[0] if opts else param.name
        if value is not None:
            return f"{name} {value!r} is not valid: {message.removeprefix(f'Invalid value for {name!r}: ')}"
    command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "segexport"
    return f"{message} (see `{command} --help`)"


if __name__ == "__main__":
    main()
