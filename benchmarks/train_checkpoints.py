"""Train a checkpoint per architecture x encoder for `segexport matrix --checkpoints`.

Each model trains for a minute on the synthetic task of tests/trained_model.py (3 classes:
dark / mid / bright by blurred luminance), so that the matrix judges fp16 and int8 on
models with structure rather than on random weights. Rows whose model refuses the
encoder are skipped with the reason. Files are named as the matrix looks them up:
``<arch>-<encoder>.pth``.

    python benchmarks/train_checkpoints.py checkpoints --archs all --encoders resnet34,mit_b0 -j 2
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
STEPS, SIZE, BATCH, LR = 60, 128, 8, 1e-3


def train_row(folder: Path, arch: str, encoder: str, arch_args: dict[str, Any]) -> str:
    """Train one row (in a worker process); returns a line for the log."""
    import segexport
    from trained_model import CLASSES, train_checkpoint

    try:
        segexport.create_model(arch, encoder, encoder_weights=None, classes=CLASSES, **arch_args)
    except ValueError as exc:  # the architecture refuses this encoder: the matrix says n/a for the row
        return f"skip {arch}-{encoder}: {str(exc).splitlines()[0]}"
    path = folder / f"{arch}-{encoder}.pth"
    partial = path.with_name(f".{path.name}.partial")  # renamed into place once complete
    figures = train_checkpoint(partial, arch, encoder, arch_args=arch_args, size=SIZE, steps=STEPS, batch=BATCH, lr=LR)
    partial.replace(path)
    return f"wrote {path.name}: loss {figures['loss']:.3f}, pixel accuracy {figures['accuracy']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--archs", default="all", help="Architectures, comma-separated, or 'all'.")
    parser.add_argument("--encoders", default="resnet34", help="Encoders, comma-separated.")
    parser.add_argument("--arch-arg", action="append", default=[], help="[ARCH:]key=value, as for segexport matrix.")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="Models trained in parallel (each on one thread).")
    args = parser.parse_args()

    from segexport.arch.registry import list_architectures
    from segexport.matrix import parse_arch_args, resolve_arch_args, split_names

    archs = split_names(args.archs) or list_architectures()
    encoders = split_names(args.encoders) or ["resnet34"]
    arch_args = resolve_arch_args(parse_arch_args(args.arch_arg), archs)
    args.folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        jobs = [pool.submit(train_row, args.folder, a, e, arch_args[a]) for a in archs for e in encoders]
        for job in jobs:
            print(job.result(), flush=True)


if __name__ == "__main__":
    main()
