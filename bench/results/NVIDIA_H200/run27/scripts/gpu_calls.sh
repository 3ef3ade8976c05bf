#!/usr/bin/env bash
# Run 27: the device calls, in order, each on a fresh H200 machine from the repository root, with
# PYTHONPATH=<site>:$PWD:$PWD/scratch (the two scripts beside this file lay in scratch/ then).
# The tree each call ran on is named; the results are the files with the call's number.
case "$1" in
1)  # 484efcd: the persistent kernel's TMA loads, on for every 16-bit product
  TRITONFORGE_PROFILE=gpu timeout -k 5 100 python3 -m pytest -q -p no:cacheprovider --durations=5 \
    tests/test_linear.py tests/test_linear_streamk.py > "$OUT/linear_tests_call1.log" 2>&1  # cut at 100 s
  timeout 300 python3 bench/tune_linear.py --out "$OUT/prefill" --prefill-only --prefill-m 2048,4096 --repeats 3 \
    --graph --budget-s 250 > "$OUT/prefill_bench_call1.log" 2>&1
  timeout 130 python3 bench/tune_linear.py --out "$OUT/p8k" --prefill-only --prefill-m 8192 --repeats 2 --graph \
    --budget-s 80 > "$OUT/p8k_bench_call1.log" 2>&1
  ;;
2)  # a46c6e9: 128 + 64 wide tiles (reverted after this call); the host-time probe's first form (cProfile
    # of 2000 TMA launches at 256 x 1024 x 1024 after the timed loops)
  python3 scratch/host_launch.py "$OUT/host_launch_call2.txt" > "$OUT/host_launch_call2.log" 2>&1
  timeout 200 python3 scratch/wide_ab.py "$OUT/wide_ab_call2.csv" > "$OUT/wide_ab_call2.log" 2>&1
  TRITONFORGE_PROFILE=gpu timeout -k 5 220 python3 -m pytest -q -p no:cacheprovider --durations=10 \
    tests/test_linear.py tests/test_linear_streamk.py > "$OUT/linear_tests_call2.log" 2>&1
  ;;
3)  # 423c582: TMA for every 16-bit product, the launch-time checks tidied; the host-time probe as committed
  timeout 100 python3 scratch/host_launch.py "$OUT/host_launch_call3.txt" > "$OUT/host_launch_call3.log" 2>&1
  TRITONFORGE_PROFILE=gpu timeout -k 5 150 python3 -m pytest -q -p no:cacheprovider --durations=10 \
    tests/test_linear.py tests/test_prefill_attention.py -k "tma or persistent or real_shapes" \
    > "$OUT/tests_call3.log" 2>&1
  timeout 300 python3 bench/tune_linear.py --out "$OUT/prefill" --prefill-only --repeats 3 --graph \
    --budget-s 270 > "$OUT/prefill_bench_call3.log" 2>&1
  ;;
4)  # c6aa8c1 (the final kernels): TMA from 3e10 multiply-adds up; linear and engine GPU tests, the 24 shapes
  TRITONFORGE_PROFILE=gpu timeout -k 5 150 python3 -m pytest -q -p no:cacheprovider --durations=5 \
    tests/test_linear.py tests/test_linear_streamk.py tests/test_registry.py > "$OUT/linear_tests_call4.log" 2>&1
  TRITONFORGE_PROFILE=gpu timeout -k 5 170 python3 -m pytest -q -p no:cacheprovider --durations=5 \
    tests/test_engine_batching.py tests/test_hf_parity.py tests/test_engine_gguf.py > "$OUT/engine_tests_call4.log" 2>&1
  timeout 260 python3 bench/tune_linear.py --out "$OUT/prefill" --prefill-only --repeats 3 --graph \
    --budget-s 230 > "$OUT/prefill_bench_call4.log" 2>&1
  ;;
5)  # d52029f: the split-K decode kernel's TMA loads (reverted after this call), tuned cold, against the same
    # kernel's pointer loads (TRITONFORGE_TMA=0) in a second process; the decode GPU tests; engine decode tests
  timeout 140 python3 -m bench.cold_tune_ab --m 16 64 --no-warm --budget-s 120 \
    --models llama-3.2-1b llama-3-8b qwen2.5-0.5b --csv "$OUT/decode_tma_call5.csv" > "$OUT/decode_tma_call5.log" 2>&1
  TRITONFORGE_TMA=0 timeout 140 python3 -m bench.cold_tune_ab --m 16 64 --no-warm --budget-s 120 \
    --models llama-3.2-1b llama-3-8b qwen2.5-0.5b --csv "$OUT/decode_ptrs_call5.csv" > "$OUT/decode_ptrs_call5.log" 2>&1
  TRITONFORGE_PROFILE=gpu timeout -k 5 70 python3 -m pytest -q -p no:cacheprovider --durations=5 \
    tests/test_linear.py -k "decode or split_k or real_shapes" > "$OUT/linear_tests_call5.log" 2>&1
  TRITONFORGE_PROFILE=gpu timeout -k 5 100 python3 -m pytest -q -p no:cacheprovider --durations=5 \
    tests/test_decode_graphs.py tests/test_engine_batching.py > "$OUT/engine_tests_call5.log" 2>&1
  ;;
6)  # 7e27ab7 (the final kernels): the prefill attention, linear and A/B-script test files, whole
  TRITONFORGE_PROFILE=gpu timeout -k 5 200 python3 -m pytest -q -p no:cacheprovider --durations=5 \
    tests/test_prefill_attention.py tests/test_linear.py tests/test_kernel_ab_scripts.py > "$OUT/tests_call6.log" 2>&1
  ;;
esac
