#!/usr/bin/env bash
# One prepared GPU run (issue 20): on a fresh CUDA machine without a package registry, install
# segexport from this working tree, run the gpu-marked tests, then the GPU benchmark table.
# Everything lands in $OUT (the device tool brings that folder back): gpu_run.log, gpu_tests.txt,
# gpu_table.json, gpu_table.md. Target: under 8 minutes on one H200.
#
# The machine has torch (CUDA), timm, onnx, onnxruntime, onnxscript, safetensors and typer; the
# few small wheels it lacks travel in .gpu_wheels/ (made here by `benchmarks/gpu_run.sh --fetch`,
# which needs the registry, then carried: run(carry=[".gpu_wheels"])).
#
#   benchmarks/gpu_run.sh --fetch     # here, once: download the wheels into .gpu_wheels/
#   benchmarks/gpu_run.sh             # there: install, test, measure
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu_wheels
# Pure-Python wheels segexport, its tests and its build need beyond what the GPU machine has.
CARRIED=(onnxslim colorama pytest pluggy iniconfig pygments "setuptools>=77")

if [ "${1:-}" = "--fetch" ]; then
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    python -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "${CARRIED[@]}"
    du -sh "$WHEELS" && ls "$WHEELS"
    exit 0
fi

OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_run.log") 2>&1
start=$SECONDS
stamp() { echo "[gpu_run $((SECONDS - start)) s] $*"; }
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1

stamp "machine"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

stamp "install the carried wheels that are missing, then segexport (editable, no dependencies fetched)"
for spec in "${CARRIED[@]}"; do
    name="${spec%%[>=<]*}"
    python -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null && [ "$name" != setuptools ] && continue
    python -m pip install -q --find-links "$WHEELS" "$spec" || stamp "could not install $spec"
done
python -m pip install -q --no-deps --no-build-isolation -e . || { stamp "segexport did not install"; exit 1; }
command -v segexport

stamp "gpu-marked tests"
# Only the modules holding gpu tests: the others import test-only packages (SMP, Ray) not carried here.
python -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml" \
    tests/test_devices.py tests/test_bench.py tests/test_export_torchscript.py tests/test_tensorrt.py tests/test_losses.py tests/test_metrics.py \
    2>&1 | tee "$OUT/gpu_tests.txt"
tests_rc=${PIPESTATUS[0]}

stamp "GPU table (stops building further models after 300 s)"
python benchmarks/gpu_table.py --budget-s 300 --json "$OUT/gpu_table.json" --markdown "$OUT/gpu_table.md"
table_rc=$?

stamp "done: tests rc=$tests_rc, table rc=$table_rc"
exit $((tests_rc || table_rc))
