#!/usr/bin/env bash
# One call on a GPU machine: the GPU test suite, the op property tests under the gpu profile, then the
# benchmark sweep. Logs, CSVs and plots go to one folder.
#
#   bench/gpu_suite.sh [OUT_DIR] [OP ...]        (or OUT=... OPS="rmsnorm rope" bench/gpu_suite.sh)
#
# Runs from the checkout (PYTHONPATH=.), installs nothing. PACK=1 packs the results into one
# suite.tar.gz in OUT_DIR (for transports that return only a few files). QUICK=1 sweeps --quick.
# Exit code: nonzero if any step failed; every step runs regardless.
set -uo pipefail

DIR="${1:-${OUT:-}}"
[ $# -gt 0 ] && shift
OPS="${*:-${OPS:-}}"
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITONFORGE_PROFILE=gpu
PY="${PYTHON:-python3}"

GPU_NAME="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
if [ -z "$GPU_NAME" ]; then
    echo "gpu_suite: no GPU visible to torch; run this on a GPU machine (tritonforge check works on a CPU)" >&2
    exit 2
fi
[ -z "$DIR" ] && DIR="bench/results/${GPU_NAME// /_}"
WORK="$DIR"
[ "${PACK:-0}" = 1 ] && WORK="$(mktemp -d)/suite"
mkdir -p "$WORK"
echo "gpu_suite: $GPU_NAME; results in $DIR; ops: ${OPS:-all}"

status=0
step() {  # step NAME CMD...: run, tee to NAME.log, remember a failure
    local name="$1"; shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$WORK/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc"
    [ "$rc" -ne 0 ] && status=1
    return 0
}

MARKS=""
[ -n "$OPS" ] && MARKS="$(echo "$OPS" | sed 's/ \+/ or /g')"
step gpu_tests "$PY" -m pytest -q -m "gpu${MARKS:+ and ($MARKS)}" tests
step op_tests "$PY" -m pytest -q ${MARKS:+-m "$MARKS"} tests/test_ops.py
QUICK_FLAG=""
[ "${QUICK:-0}" = 1 ] && QUICK_FLAG="--quick"
# shellcheck disable=SC2086  # OPS is a word list on purpose
step sweep "$PY" -m bench.sweep ${OPS:+--ops $OPS} $QUICK_FLAG --out "$WORK"

if [ "${PACK:-0}" = 1 ]; then
    mkdir -p "$DIR"
    tar -C "$(dirname "$WORK")" -czf "$DIR/suite.tar.gz" suite
    cp "$WORK/sweep.log" "$DIR/sweep.log"
    echo "packed into $DIR/suite.tar.gz"
fi
exit $status
