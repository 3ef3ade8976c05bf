#!/usr/bin/env bash
# One call on a GPU machine: the GPU test suite, the op property tests under the gpu profile, then the
# benchmark sweep. Logs, CSVs and plots go to one folder.
#
#   bench/gpu_suite.sh [OUT_DIR] [OP ...]        (or OUT=... OPS="rmsnorm rope" bench/gpu_suite.sh)
#
# Runs from the checkout (PYTHONPATH=.); installs only wheels carried in .whl/ (bench/carry_wheels.sh). With ops named, runs every test of those ops;
# otherwise every GPU-marked test, then the sweep, then the generic op property tests. QUICK=1 sweeps --quick; DTYPES="bf16" limits
# the sweep's dtypes; SWEEP_TIMEOUT=<seconds> bounds the sweep (ops finished by then keep their CSVs);
# TEST_TIMEOUT=<seconds> bounds each pytest step; SWEEP=0 runs the tests only; BENCH=1 adds the pytest-benchmark step.
# PACK=1 (for transports that return only a few files): each step's log goes straight to OUT_DIR (so a call
# cut short still returns what ran), the CSVs and plots into OUT_DIR/suite.tar.gz, repacked after every step:
# at most 5 files in OUT_DIR.
# Exit code: nonzero if any step failed; every step runs regardless. Refuses (exit 2) without a GPU.
set -uo pipefail

DIR="${1:-${OUT:-}}"
[ $# -gt 0 ] && shift
OPS="${*:-${OPS:-}}"
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITONFORGE_PROFILE=gpu
PY="${PYTHON:-python3}"
# shellcheck source=bench/carry_wheels.sh
source bench/carry_wheels.sh

GPU_NAME="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
if [ -z "$GPU_NAME" ]; then
    echo "gpu_suite: no GPU visible to torch; run this on a GPU machine (tritonforge check works on a CPU)" >&2
    exit 2
fi
[ -z "$DIR" ] && DIR="bench/results/${GPU_NAME// /_}"
WORK="$DIR"
[ "${PACK:-0}" = 1 ] && WORK="$(mktemp -d)/suite"
mkdir -p "$WORK" "$DIR" || exit 2
echo "gpu_suite: $GPU_NAME; results in $DIR; ops: ${OPS:-all}"

status=0
install_carried_wheels gpu_suite || status=1
pack() {  # PACK=1: the CSVs and plots so far into DIR/suite.tar.gz (written aside, then moved: never half a file)
    [ "${PACK:-0}" = 1 ] || return 0
    tar -C "$(dirname "$WORK")" -czf "$DIR/suite.tar.gz.part" suite && mv "$DIR/suite.tar.gz.part" "$DIR/suite.tar.gz"
}
step() {  # step NAME CMD...: run, tee to DIR/NAME.log, remember a failure (pytest's 5, nothing collected, is fine)
    local name="$1"; shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$DIR/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc"
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then status=1; fi
    pack
    return 0
}
TEST_LIMIT=()
[ -n "${TEST_TIMEOUT:-}" ] && TEST_LIMIT=(timeout -k 15 "$TEST_TIMEOUT")

if [ -n "$OPS" ]; then
    # Every test of the chosen ops (their markers), GPU-marked ones included, under the gpu profile.
    step op_tests "${TEST_LIMIT[@]}" "$PY" -m pytest -v --durations=30 -m "$(echo "$OPS" | sed 's/ \+/ or /g')" tests
else
    step gpu_tests "${TEST_LIMIT[@]}" "$PY" -m pytest -v --durations=30 -m gpu tests
fi
SWEEP_FLAGS=()
[ "${QUICK:-0}" = 1 ] && SWEEP_FLAGS+=(--quick)
# shellcheck disable=SC2206  # OPS and DTYPES are word lists on purpose
[ -n "$OPS" ] && SWEEP_FLAGS+=(--ops $OPS)
# shellcheck disable=SC2206
[ -n "${DTYPES:-}" ] && SWEEP_FLAGS+=(--dtypes $DTYPES)
TIMEOUT=()
[ -n "${SWEEP_TIMEOUT:-}" ] && TIMEOUT=(timeout -k 15 "$SWEEP_TIMEOUT")
if [ "${SWEEP:-1}" != 0 ]; then
    step sweep "${TIMEOUT[@]}" "$PY" -m bench.sweep "${SWEEP_FLAGS[@]}" --out "$WORK"
    step summary "$PY" -m bench.summarize "$WORK"
fi
# BENCH=1: the pytest-benchmark view of the ops (bench/test_bench_ops.py), its JSON beside the sweep's CSVs.
if [ "${BENCH:-0}" = 1 ]; then
    step benchmarks "${TEST_LIMIT[@]}" "$PY" -m pytest -q -m gpu bench/test_bench_ops.py --benchmark-only \
        --benchmark-json "$WORK/benchmarks.json"
fi
# The property tests last: with ops named they ran above; otherwise the sweep's figures come first.
[ -z "$OPS" ] && step op_tests "${TEST_LIMIT[@]}" "$PY" -m pytest -v --durations=30 tests/test_ops.py

[ "${PACK:-0}" = 1 ] && echo "packed into $DIR/suite.tar.gz"
exit $status
