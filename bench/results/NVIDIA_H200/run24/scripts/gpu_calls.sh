#!/usr/bin/env bash
# Run 24's device calls: `bash gpu_calls.sh s<N>` from the repository root on the GPU machine, with the
# project's wheels in .whl/ and this run's scripts/ copied to scratch/ (the tree of each call: run24_notes.md).
# NCU: the Nsight Compute binary (default: ncu on PATH).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$PWD/.site" .whl/*.whl \
  && export PYTHONPATH="$PWD/.site":$PWD:$PWD/scratch || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv > "$OUT/gpu.txt"
python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> "$OUT/gpu.txt"
case "$1" in
s1)
  TRITONFORGE_PROFILE=gpu timeout -k 5 150 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/test_w4a16_mma_gemv.py > "$OUT/mma_tests_call1.log" 2>&1
  timeout 300 python3 -m bench.quant_gemv_ab --kernels w4a16 --rows 1 4 16 --deadline-s 260 \
    --csv "$OUT/w4_mma_ab_call1.csv" > "$OUT/w4_mma_ab_call1.log" 2>&1
  timeout 100 "${NCU:-ncu}" --kernel-name regex:mma_gemv --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
    --section SchedulerStats --section LaunchStats --section InstructionStats python3 scratch/w4_mma_ncu.py > "$OUT/w4_mma_ncu_call1.txt" 2>&1
  ;;
s2)
  timeout 100 python3 scratch/mma_check.py _mma_fold _mma_asm > "$OUT/mma_check_call2.log" 2>&1
  timeout 330 python3 -m bench.quant_gemv_ab --kernels w4a16 --rows 1 4 16 --deadline-s 290 --edits fold=_mma_fold \
    asm=_mma_asm --csv "$OUT/w4_mma_ab_call2.csv" > "$OUT/w4_mma_ab_call2.log" 2>&1
  timeout 80 "${NCU:-ncu}" --kernel-name regex:mma_gemv --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
    --section SchedulerStats --section LaunchStats --section InstructionStats python3 scratch/w4_mma_ncu.py _mma_asm > "$OUT/w4_mma_ncu_call2.txt" 2>&1
  ;;
s3)
  TRITONFORGE_PROFILE=gpu timeout -k 5 150 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/test_w4a16_mma_gemv.py tests/test_quant_linear.py > "$OUT/w4_tests_call3.log" 2>&1
  timeout 250 python3 -m bench.quant_gemv_ab --kernels w4a16 --rows 1 2 3 4 8 16 --deadline-s 225 \
    --csv "$OUT/w4_ab_large_call3.csv" > "$OUT/w4_ab_large_call3.log" 2>&1
  timeout 150 python3 -m bench.quant_gemv_ab --kernels w4a16 --rows 2 4 16 --shapes 896x896 128x896 4864x896 \
    896x4864 --deadline-s 130 --csv "$OUT/w4_ab_small_call3.csv" > "$OUT/w4_ab_small_call3.log" 2>&1
  ;;
s4)
  # the split-K aim variants, made from _mma_pre.py and from the tree's kernel (533fdb0) as they were then
  sed 's/ql.W4_GEMV_PROGRAMS_PER_SM)/2)/' scratch/_mma_pre.py > scratch/_mma_pre_a2.py
  sed 's/ql.W4_GEMV_PROGRAMS_PER_SM)/8)/' scratch/_mma_pre.py > scratch/_mma_pre_a8.py
  sed -e 's/ql.W4_GEMV_PROGRAMS_PER_SM)/8)/' -e 's/^register_impl.*$//' kernels/w4a16_mma_gemv.py > scratch/_mma_a8.py
  timeout 100 python3 scratch/mma_check.py _mma_pre _mma_pre_a8 > "$OUT/mma_check_call4.log" 2>&1
  timeout 300 python3 -m bench.quant_gemv_ab --kernels w4a16 --rows 1 4 16 --deadline-s 270 \
    --shapes 4096x4096 14336x4096 4096x14336 896x4864 4864x896 --edits pre=_mma_pre pre_a2=_mma_pre_a2 \
    pre_a8=_mma_pre_a8 a8=_mma_a8 --csv "$OUT/w4_mma_ab_call4.csv" > "$OUT/w4_mma_ab_call4.log" 2>&1
  timeout 170 python3 -m bench.sweep --ops linear_w4a16 --dtypes bf16 --no-plot --out "$OUT/sweep" > "$OUT/sweep_w4a16_call4.log" 2>&1
  ;;
s5)
  TRITONFORGE_PROFILE=gpu timeout -k 5 150 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/test_w4a16_mma_gemv.py tests/test_quant_linear.py tests/test_bench.py > "$OUT/gpu_tests_call5.log" 2>&1
  timeout 230 python3 -m bench.quant_gemv_ab --kernels w4a16 --rows 1 3 4 8 16 --deadline-s 200 \
    --shapes 4096x4096 14336x4096 4096x14336 896x4864 4864x896 --csv "$OUT/w4_ab_call5.csv" > "$OUT/w4_ab_call5.log" 2>&1
  timeout 200 python3 -m bench.sweep --ops linear_w4a16 linear_w8a16 --dtypes bf16 --no-plot --out "$OUT/sweep" \
    > "$OUT/sweep_quant_call5.log" 2>&1
  ;;
s6)
  TRITONFORGE_PROFILE=gpu timeout -k 5 120 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/test_w4a16_mma_gemv.py tests/test_quant_linear.py > "$OUT/gpu_tests_call6.log" 2>&1
  timeout 250 python3 -m bench.quant_gemv_ab --kernels w4a16 --rows 1 3 4 8 16 --deadline-s 220 \
    --shapes 4096x4096 14336x4096 4096x14336 896x4864 4864x896 --edits clamp=_mma_clamp \
    --csv "$OUT/w4_ab_call6.csv" > "$OUT/w4_ab_call6.log" 2>&1
  ;;
s7)
  TRITONFORGE_PROFILE=gpu timeout -k 5 60 python3 -m pytest -q -m gpu -p no:cacheprovider --durations=3 \
    tests/test_w8a16_mma_gemv.py > "$OUT/w8_tests_call7.log" 2>&1
  timeout 150 python3 -m bench.quant_gemv_ab --kernels w8a16 --rows 1 3 4 8 16 --deadline-s 125 \
    --shapes 14336x4096 4096x14336 4096x4096 4864x896 --csv "$OUT/w8_ab_call7.csv" > "$OUT/w8_ab_call7.log" 2>&1
  ;;
esac
