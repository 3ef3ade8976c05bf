#!/usr/bin/env bash
# One call on a GPU machine: the engine benchmark (single stream, offline throughput, HF eager baseline)
# and the serving benchmark (streaming clients at several concurrencies vs the same workload offline).
#
#   bench/gpu_engine.sh OUT_DIR
#
# Runs from the checkout (PYTHONPATH=.). The serving benchmark needs fastapi and uvicorn; where the
# machine lacks them, carry wheels in .whl/ (see README, "Running on a lent GPU"): they are installed
# into a private folder, never over the machine's torch or triton. Exit code: nonzero if a step failed.
#
# Writes 7 files in OUT_DIR: engine_bench.{json,csv,log}, serve_bench.{json,csv,log}, serve_bench_server.log.
# Both benchmarks rewrite their JSON and CSV as they go, so a call cut short keeps what was measured.
# Knobs (environment): ENGINE_ARGS, SERVE_ARGS (extra arguments, appended: later ones win),
# ENGINE_TIMEOUT (default 320), SERVE_TIMEOUT (default 230): seconds for each step, so that one cannot eat
# the other's time and both end, with 15 s of grace each, inside a 600-second GPU call (empty: no limit),
# WHEEL_DIR (default .whl), WHEEL_SITE (default /tmp/tf-site), PYTHON (default python3).
# On a CPU, ENGINE_ARGS=--smoke SERVE_ARGS=--smoke runs both benchmarks' code paths in seconds.
set -uo pipefail
OUT_DIR="${1:?usage: bench/gpu_engine.sh OUT_DIR}"
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT_DIR" || exit 2
export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
status=0
# shellcheck source=bench/carry_wheels.sh
source bench/carry_wheels.sh
install_carried_wheels gpu_engine || status=1

# with_timeout SECONDS CMD...: CMD under `timeout` when SECONDS is set, else CMD as it is.
with_timeout() {
    local seconds="$1"; shift
    if [ -n "$seconds" ]; then timeout -k 15 "$seconds" "$@"; else "$@"; fi
}

# shellcheck disable=SC2086  # ENGINE_ARGS and SERVE_ARGS are word lists on purpose
with_timeout "${ENGINE_TIMEOUT-320}" "$PY" bench/engine_bench.py --out "$OUT_DIR" ${ENGINE_ARGS:-} 2>&1 \
    | tee "$OUT_DIR/engine_bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# shellcheck disable=SC2086
with_timeout "${SERVE_TIMEOUT-230}" "$PY" bench/serve_bench.py --spawn-model qwen2.5-0.5b --concurrency 1,16,64 \
    --out "$OUT_DIR" ${SERVE_ARGS:-} 2>&1 | tee "$OUT_DIR/serve_bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
