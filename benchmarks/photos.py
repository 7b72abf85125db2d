"""Write the calibration photographs that the benchmarks and the README's matrix use.

They are the twelve photographs scikit-image ships (astronaut, coffee, chelsea, ...; no
download), the same ones the tests calibrate and judge int8 on.

    python benchmarks/photos.py DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from trained_model import write_photos  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="Where to write the PNG files (created if missing).")
    args = parser.parse_args()
    paths = write_photos(args.folder)
    print(f"{len(paths)} photographs written to {args.folder}")


if __name__ == "__main__":
    main()
