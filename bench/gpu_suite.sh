#!/usr/bin/env bash
# One call on a GPU machine: the GPU test suite, the op property tests under the gpu profile, then the
# benchmark sweep. Logs, CSVs and plots go to one folder.
#
#   bench/gpu_suite.sh [OUT_DIR] [OP ...]        (or OUT=... OPS="rmsnorm rope" bench/gpu_suite.sh)
#
# Runs from the checkout (PYTHONPATH=.), installs nothing. With ops named, runs every test of those ops;
# otherwise every GPU-marked test and the generic op tests. QUICK=1 sweeps --quick; DTYPES="bf16" limits
# the sweep's dtypes; SWEEP_TIMEOUT=<seconds> bounds the sweep (ops finished by then keep their CSVs). PACK=1 packs the results into one suite.tar.gz in OUT_DIR (for transports that
# return only a few files).
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
step() {  # step NAME CMD...: run, tee to NAME.log, remember a failure (pytest's 5, nothing collected, is fine)
    local name="$1"; shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$WORK/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc"
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then status=1; fi
    return 0
}

if [ -n "$OPS" ]; then
    # Every test of the chosen ops (their markers), GPU-marked ones included, under the gpu profile.
    step op_tests "$PY" -m pytest -q -m "$(echo "$OPS" | sed 's/ \+/ or /g')" tests
else
    step gpu_tests "$PY" -m pytest -q -m gpu tests
    step op_tests "$PY" -m pytest -q tests/test_ops.py
fi
SWEEP_FLAGS=()
[ "${QUICK:-0}" = 1 ] && SWEEP_FLAGS+=(--quick)
# shellcheck disable=SC2206  # OPS and DTYPES are word lists on purpose
[ -n "$OPS" ] && SWEEP_FLAGS+=(--ops $OPS)
# shellcheck disable=SC2206
[ -n "${DTYPES:-}" ] && SWEEP_FLAGS+=(--dtypes $DTYPES)
TIMEOUT=()
[ -n "${SWEEP_TIMEOUT:-}" ] && TIMEOUT=(timeout "$SWEEP_TIMEOUT")
step sweep "${TIMEOUT[@]}" "$PY" -m bench.sweep "${SWEEP_FLAGS[@]}" --out "$WORK"
step summary "$PY" -m bench.summarize "$WORK"

if [ "${PACK:-0}" = 1 ]; then
    mkdir -p "$DIR"
    tar -C "$(dirname "$WORK")" -czf "$DIR/suite.tar.gz" suite
    cp "$WORK/sweep.log" "$DIR/sweep.log"
    echo "packed into $DIR/suite.tar.gz"
fi
exit $status
