"""``python -m segexport.matrix --worker JOB RESULT``: the matrix's worker process (started by its supervisors)."""

from __future__ import annotations

import sys

from segexport.matrix.worker import worker_main

if sys.argv[1:2] == ["--worker"] and len(sys.argv) == 4:
    sys.exit(worker_main(sys.argv[2:]))
sys.exit("This is segexport's matrix worker; run `segexport matrix` instead.")
