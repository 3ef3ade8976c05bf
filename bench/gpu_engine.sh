#!/usr/bin/env bash
# One call on a GPU machine: the engine benchmark (single stream, offline throughput, HF eager baseline)
# and the serving benchmark (streaming clients at several concurrencies vs the same workload offline).
#
#   bench/gpu_engine.sh OUT_DIR
#
# Runs from the checkout (PYTHONPATH=.). The serving benchmark needs fastapi and uvicorn; where the
# machine lacks them, carry wheels in .whl/ (see README, "Running on a lent GPU"): they are installed
# into a private folder, never over the machine's torch or triton. Exit code: nonzero if a step failed.
set -uo pipefail
OUT_DIR="${1:?usage: bench/gpu_engine.sh OUT_DIR}"
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT_DIR"
export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/tf-site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/tf-site"
fi
status=0
"$PY" bench/engine_bench.py --out "$OUT_DIR" ${ENGINE_ARGS:-} 2>&1 | tee "$OUT_DIR/engine_bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
"$PY" bench/serve_bench.py --spawn-model qwen2.5-0.5b --concurrency 1,16,64 --out "$OUT_DIR" ${SERVE_ARGS:-} \
    2>&1 | tee "$OUT_DIR/serve_bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
