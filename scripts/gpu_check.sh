#!/usr/bin/env bash
# GPU check (<= 8 minutes on one GPU, no network, no DVC, no MLflow): installs clipbench --no-deps and the wheels in
# wheels/ (scripts/fetch_gpu_wheels.sh), runs the CUDA tests, the accelerator bench and the miniature paper-shaped
# suite on the GPU, and writes reports/gpu-check.md. Without a GPU it is a rehearsal: the report says so first.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=reports/gpu-check.md
LOG=$(mktemp -d)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DVC_NO_ANALYTICS=1

if ! $PY -c "import open_clip" 2>/dev/null; then
  if compgen -G "wheels/*.whl" >/dev/null; then
    # only what is missing: the packages the machine already has satisfy open_clip's requirements as they are
    $PY -m pip install -q --no-index --find-links wheels open_clip_torch click pyyaml || exit 1
  else
    echo "open_clip is not importable and wheels/ is empty: run scripts/fetch_gpu_wheels.sh where there is a network" >&2
    exit 2
  fi
fi
$PY -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "(clipbench used from PYTHONPATH)"

GPU=$($PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')")
{
  if [[ -z "$GPU" ]]; then
    echo "# GPU check: no GPU: rehearsal only"
    echo
    echo "No CUDA device was visible: the CUDA tests are skipped and the accelerator parts did not run. Nothing below is a GPU result."
  else
    echo "# GPU check on $GPU"
  fi
  echo
  echo "torch $($PY -c 'import torch; print(torch.__version__)'), open_clip $($PY -c 'import open_clip; print(open_clip.__version__)'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
} > "$OUT.tmp"

step() {  # step NAME COMMAND...: run, time, append the outcome and the output tail to the report
  local name=$1; shift
  local start=$SECONDS
  "$@" > "$LOG/out" 2>&1
  local rc=$?
  { echo "## $name: $([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - start)) s"; echo
    echo '```'; grep -v "^WARNING:root:No pretrained" "$LOG/out" | tail -n 25; echo '```'; echo; } >> "$OUT.tmp"
  return $rc
}

status=0
step "CUDA tests (tests/test_cuda.py)" $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py || status=1
step "plan of the paper suite" $PY -m clipbench.cli plan --params configs/paper.yaml || status=1
if [[ -n "$GPU" || -n "${REHEARSE_FULL:-}" ]]; then
  DEVICE=$([[ -n "$GPU" ]] && echo cuda || echo cpu)
  step "accelerator bench ($DEVICE)" $PY -m clipbench.cli bench --device "$DEVICE" --quick --out "$LOG/bench.md" \
    && cat "$LOG/bench.md" >> "$OUT.tmp" || status=1
  step "miniature paper-shaped suite ($DEVICE)" $PY scripts/miniature_suite.py --device "$DEVICE" \
    $([[ -z "$GPU" ]] && echo --cpu-size) || status=1
else
  echo "Accelerator bench and miniature suite: not run (no GPU; REHEARSE_FULL=1 runs them on the CPU)." >> "$OUT.tmp"
fi
mv "$OUT.tmp" "$OUT"
rm -rf "$LOG"
echo "$OUT written (status $status)"
exit $status
