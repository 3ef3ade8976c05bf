#!/usr/bin/env bash
# Run 26: the device calls, in order, each on a fresh H200 machine from the repository root, with
# PYTHONPATH=<site>:$PWD:$PWD/scratch (the two scripts beside this file lay in scratch/ then).
# The tree each call ran on is named; the results are the files with the call's number.
case "$1" in
1)  # 392794c: stream-K, first version (one full wave plus the partial one split, after the whole tiles)
  TRITONFORGE_PROFILE=gpu timeout -k 5 150 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/test_linear_streamk.py tests/test_linear.py > "$OUT/gpu_tests_call1.log" 2>&1
  timeout 250 python3 bench/tune_linear.py --out "$OUT/prefill" --prefill-only --budget-s 220 > "$OUT/prefill_bench_call1.log" 2>&1
  timeout 150 python3 bench/tune_linear.py --out "$OUT/mid" --prefill-only --prefill-m 128,512,1024 --budget-s 120 \
    > "$OUT/mid_bench_call1.log" 2>&1
  ;;
2)  # 4937143: stream-K splits only the partial wave, before the whole tiles
  TRITONFORGE_PROFILE=gpu timeout -k 5 150 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/test_linear_streamk.py > "$OUT/gpu_tests_call2.log" 2>&1
  timeout 250 python3 bench/tune_linear.py --out "$OUT/prefill" --prefill-only --budget-s 220 > "$OUT/prefill_bench_call2.log" 2>&1
  timeout 150 python3 bench/tune_linear.py --out "$OUT/mid" --prefill-only --prefill-m 128,512,1024 --budget-s 120 \
    > "$OUT/mid_bench_call2.log" 2>&1
  ;;
3)  # 4937143: where the stream-K phase's time goes
  timeout 300 python3 scratch/sk_variants.py "$OUT/sk_variants_call3.csv" > "$OUT/sk_variants_call3.log" 2>&1
  ;;
4)  # d0ea4f8: the persistent kernel's split tail, forced halves / quarters per pinned config, and tuned
  TRITONFORGE_PROFILE=gpu timeout -k 5 150 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/test_linear.py tests/test_linear_streamk.py > "$OUT/gpu_tests_call4.log" 2>&1
  timeout 330 python3 scratch/tail_ab.py "$OUT/tail_ab_call4.csv" 230 > "$OUT/tail_ab_call4.log" 2>&1
  ;;
5)  # e19abaa: split-tail costs per config; three interleaved timings per impl
  TRITONFORGE_PROFILE=gpu timeout -k 5 120 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/test_linear.py tests/test_linear_streamk.py > "$OUT/gpu_tests_call5.log" 2>&1
  timeout 300 python3 bench/tune_linear.py --out "$OUT/prefill" --prefill-only --repeats 3 --budget-s 270 \
    > "$OUT/prefill_bench_call5.log" 2>&1
  timeout 150 python3 bench/tune_linear.py --out "$OUT/mid" --prefill-only --prefill-m 128,512,1024 --repeats 2 \
    --budget-s 120 > "$OUT/mid_bench_call5.log" 2>&1
  ;;
6)  # 8944dea: the same, also as CUDA-graph replays
  timeout 330 python3 bench/tune_linear.py --out "$OUT/prefill" --prefill-only --repeats 3 --graph --budget-s 290 \
    > "$OUT/prefill_bench_call6.log" 2>&1
  timeout 200 python3 bench/tune_linear.py --out "$OUT/mid" --prefill-only --prefill-m 128,512,1024 --repeats 2 \
    --graph --budget-s 160 > "$OUT/mid_bench_call6.log" 2>&1
  ;;
7)  # 68fe55c: the linear tests (GPU-marked and not) and the engine tests that run prefill through it
  TRITONFORGE_PROFILE=gpu timeout -k 5 150 python3 -m pytest -q -p no:cacheprovider --durations=5 \
    tests/test_linear.py tests/test_linear_streamk.py tests/test_registry.py > "$OUT/linear_tests_call7.log" 2>&1
  TRITONFORGE_PROFILE=gpu timeout -k 5 270 python3 -m pytest -q -p no:cacheprovider --durations=5 \
    tests/test_engine_batching.py tests/test_hf_parity.py tests/test_engine_gguf.py > "$OUT/engine_tests_call7.log" 2>&1
  ;;
8)  # 609d1a0: the registry fix, and the linear op's property and smoke tests in the GPU profile
  TRITONFORGE_PROFILE=gpu timeout -k 5 30 python3 -m pytest -q -p no:cacheprovider tests/test_registry.py \
    > "$OUT/registry_tests_call8.log" 2>&1
  TRITONFORGE_PROFILE=gpu timeout -k 5 250 python3 -m pytest -v -p no:cacheprovider --durations=5 \
    "tests/test_ops.py::test_op_matches_reference[linear]" "tests/test_ops.py::test_smoke_cases[linear]" \
    > "$OUT/ops_linear_tests_call8.log" 2>&1
  ;;
9)  # 6f1950b (the final kernels): the linear GPU tests; the 16 prefill shapes at M = 2048 and 4096 again
  TRITONFORGE_PROFILE=gpu timeout -k 5 50 python3 -m pytest -q -m gpu -p no:cacheprovider \
    tests/test_linear.py tests/test_linear_streamk.py > "$OUT/gpu_tests_call9.log" 2>&1
  timeout 150 python3 bench/tune_linear.py --out "$OUT/prefill" --prefill-only --prefill-m 2048,4096 --repeats 3 --graph \
    --budget-s 120 > "$OUT/prefill_bench_call9.log" 2>&1
  ;;
esac
