"""Calls 7 and 8 of run 25, run inline on the GPU machine (PYTHONPATH = the checkout): why a same-size copy
was slow in call 5's 14q/2kv rows. Call 7: a 33,561,600-byte copy (the 14q/2kv, 32k case) timed fresh,
after the decode op's inputs were made, after the op was timed, and again: 13.82 / 13.80 / 13.81 / 13.81 us
(op 15.04): no order or allocation effect. Call 8: the copy's time against its buffer size (bytes per
buffer, its remainder past a 4 KiB multiple, uint8 and int32 copies): 16,780,800 (3584 past): 13.81 us;
16,785,408 / 16,777,216 / 16,842,752 / 16,781,312 (4 KiB multiples): 9.73-9.77 us; 2,100,736 (3584 past):
2.13 us; 2,097,152 / 2,105,344: 1.65-1.66 us. So ``bench.copy_at_size`` rounds its buffers to 4 KiB."""

import torch

from bench.copy_at_size import copy_pair
from bench.timing import input_sets_for, time_each
from kernels import registry


def call7() -> None:
    op = registry.get("paged_decode_attention")
    nb = 33561600
    n = input_sets_for(nb, torch.cuda.get_device_properties(0).L2_cache_size)

    def tcopy(tag):
        c = [copy_pair(nb) for _ in range(n)]  # (then: nb // 2 bytes, not yet rounded to 4 KiB)
        (ms,), _ = time_each([lambda src, dst: dst.copy_(src)], c)
        print(tag, n, f"{ms * 1e3:.2f} us", flush=True)

    tcopy("fresh")
    case = next(c for c in op.bench_cases()
            if c["batch"] == 1 and c["kv_heads"] == 2 and c["context"] == 32768 and c["block_size"] == 16)
    gen = torch.Generator(device="cuda").manual_seed(0)
    sets = [op.make_inputs(case, torch.device("cuda"), gen) for _ in range(n)]
    tcopy("after inputs")
    (ms,), _ = time_each([op.impl("triton")], sets)
    print("op", f"{ms * 1e3:.2f}")
    tcopy("after op")
    torch.cuda.synchronize()
    tcopy("again")


def call8() -> None:
    for half in (16780800, 16785408, 16777216, 16842752, 16781312, 2100736, 2097152, 2105344):
        c = []
        for _ in range(4):
            s = torch.empty(half, dtype=torch.uint8, device="cuda").random_()
            c.append({"src": s, "dst": torch.empty_like(s)})
        (ms,), _ = time_each([lambda src, dst: dst.copy_(src)], c)
        (ms2,), _ = time_each([lambda src, dst: dst.view(torch.int32).copy_(src.view(torch.int32))], c)
        print(half, half % 4096, f"u8 {ms * 1e3:.2f} us  i32 {ms2 * 1e3:.2f} us", flush=True)


if __name__ == "__main__":
    call7()
    call8()
