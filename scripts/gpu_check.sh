#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: install the CUDA build of the JAX the project pins into this
# Python (no second environment), print the devices, run the test suite, time the large preset's
# plan and one large width, and keep the figures.   Usage: bash scripts/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/gpu_check}
mkdir -p "$OUT"
PY=$(command -v python || command -v python3)
if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  "$PY" -m pip install --quiet -e ".[test]"
  # The CUDA plugin of the installed JAX version (jax[cuda12] pulls the matching jaxlib plugins).
  JAX_VERSION=$("$PY" -c 'import jax; print(jax.__version__)')
  "$PY" -m pip install --quiet "jax[cuda12]==$JAX_VERSION"
fi
{
  echo "== devices"
  "$PY" -c 'import jax; from studylib import devices; print(devices.describe(), "|", devices.stack()); print(jax.devices())'
  echo "== test suite"
  /usr/bin/time -f "tests: %e s" "$PY" -m pytest -q -x || echo "TESTS FAILED"
  echo "== plan of --preset large"
  /usr/bin/time -f "plan: %e s" "$PY" -m study.compare --preset large --plan
  echo "== one large width (4096, 8 seeds, 10000 steps, as the large preset)"
  /usr/bin/time -f "compare width 4096: %e s" "$PY" -m study.compare --preset large --widths 4096 \
      --out "$OUT/compare_w4096" --no-progress
  echo "== the default compare (same numbers as on CPU to float rounding?)"
  /usr/bin/time -f "compare default: %e s" "$PY" -m study.compare --out "$OUT/compare" --no-progress
  "$PY" -m study.figures "$OUT/compare" "$OUT/compare_w4096" --to "$OUT/figures"
} 2>&1 | tee "$OUT/gpu_check.log"
echo "wrote $OUT/gpu_check.log and $OUT/figures/"
