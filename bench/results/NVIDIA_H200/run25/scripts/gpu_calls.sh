#!/usr/bin/env bash
# Run 25's device calls, as run: bash gpu_calls.sh c1 (... c4) from the repository root on the GPU machine, with
# .whl/ carried (README, "Running on a lent GPU") and this folder's m64_configs.py at scratch/m64_configs.py.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD:$PWD/scratch || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv > "$OUT/gpu.txt"
python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> "$OUT/gpu.txt"
case "$1" in
c4)
  FILES=$(ls tests/test_*.py | grep -v test_gguf_kernels | tr "\n" " ")
  echo "$FILES" > "$OUT/gpu_suite_files.txt"
  TRITONFORGE_PROFILE=gpu timeout -k 5 540 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=15 -rs \
    $FILES tests/test_gguf_kernels.py > "$OUT/gpu_suite_call4.log" 2>&1
  ;;
c3)
  timeout 230 python3 scratch/m64_configs.py "$OUT/m64_configs_call3.csv" > "$OUT/m64_configs_call3.log" 2>&1
  TRITONFORGE_PROFILE=gpu timeout -k 5 300 python3 -m pytest -q -p no:cacheprovider --durations=5 -x \
    tests/test_engine_batching.py tests/test_hf_parity.py tests/test_decode_graphs.py > "$OUT/engine_tests_call3.log" 2>&1
  ;;
c2)
  TRITONFORGE_PROFILE=gpu timeout -k 5 150 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/test_linear.py tests/test_quant_linear.py tests/test_w8a16_mma_gemv.py > "$OUT/gpu_tests_call2.log" 2>&1
  timeout 250 python3 -m bench.cold_tune_ab --m 1 4 16 64 --no-warm --budget-s 215 \
    --models llama-3.2-1b llama-3-8b qwen2.5-0.5b --csv "$OUT/decode_all_call2.csv" > "$OUT/decode_all_call2.log" 2>&1
  timeout 150 python3 -m bench.quant_gemv_ab --kernels w8a16 --rows 1 2 3 4 --deadline-s 125 \
    --shapes 14336x4096 4096x14336 4096x4096 4864x896 896x4864 --csv "$OUT/w8_rows_call2.csv" > "$OUT/w8_rows_call2.log" 2>&1
  ;;
c1)
  TRITONFORGE_PROFILE=gpu timeout -k 5 130 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/test_w4a16_mma_gemv.py tests/test_quant_linear.py > "$OUT/gpu_tests_call1.log" 2>&1
  timeout 140 python3 -m bench.quant_gemv_ab --kernels w8a16 --rows 2 3 4 --deadline-s 115 \
    --shapes 14336x4096 4096x14336 4096x4096 4864x896 896x4864 --csv "$OUT/w8_rows_call1.csv" > "$OUT/w8_rows_call1.log" 2>&1
  timeout 270 python3 -m bench.cold_tune_ab --m 64 16 4 --splits 1 2 4 8 --no-warm --budget-s 240 \
    --models llama-3.2-1b llama-3-8b qwen2.5-0.5b --csv "$OUT/decode_splits_call1.csv" > "$OUT/decode_splits_call1.log" 2>&1
  ;;
esac
# Calls 5-9 (the copy_at_size study):
# c5:  python3 -m bench.copy_at_size --ops kv_cache_write --csv "$OUT/kv_write_vs_copy_call5.csv"
#      python3 -m bench.copy_at_size --ops paged_decode_attention --where batch=1 --csv "$OUT/decode_b1_vs_copy_call5.csv"
# c6:  the same for paged_decode_attention, --where batch=1 kv_heads=2 block_size=16 first, then kv_heads=8
#      (decode_b1_2kv_first_call6.*, decode_b1_8kv_second_call6.*): the 14q/2kv copies were slow either way
# c7, c8: copy_size_probes.py (inline; printed output only, quoted in its docstring)
# c9:  after the 4 KiB rounding of the copy buffers: --ops paged_decode_attention --where batch=1 block_size=16
#      (decode_b1_vs_copy_call9.*) and --ops kv_cache_write --where kv_heads=2 block_size=16 (kv_write_2kv_vs_copy_call9.*)
