"""``tritonforge check``: every registered op's smoke cases, kernel against reference, as one table.

On a machine without a GPU the kernels run in Triton's CPU interpreter: this module sets
``TRITON_INTERPRET=1`` itself before anything imports the kernels (which is why nothing at the top of this
module, or of the CLI, imports triton). Exit code 1 if any op fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass


def use_interpreter_without_gpu() -> bool:
    """Switch Triton to its interpreter when no GPU is visible; True if kernels will be interpreted.

    Must run before the first kernel module is imported: Triton decides at decoration time.
    """
    import torch

    if torch.cuda.is_available():
        return False
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        if "kernels.ops" in sys.modules:
            raise RuntimeError(
                "no GPU here and the kernels were already imported without TRITON_INTERPRET=1; "
                "set TRITON_INTERPRET=1 in the environment before starting Python"
            )
        os.environ["TRITON_INTERPRET"] = "1"
    return True


@dataclass
class OpResult:
    op: str
    cases: int
    passed: int
    worst: str  # the first failing case and its message, or "" when all passed
    seconds: float

    @property
    def ok(self) -> bool:
        return self.cases > 0 and self.passed == self.cases


def check_op(op, device, impl: str = "triton") -> OpResult:
    """Run ``op``'s smoke cases through :func:`kernels.testing.run_case`; failures are collected, not raised."""
    from kernels.testing import describe, run_case

    start, passed, worst = time.perf_counter(), 0, ""
    cases = op.smoke_cases()
    for i, case in enumerate(cases):
        try:
            run_case(op, case, device, seed=i, impl=impl)
            passed += 1
        except Exception as e:  # a crash in one op's kernel must not hide the others' results
            if not worst:
                message = str(e).splitlines()[0] if str(e) else type(e).__name__
                worst = f"[{describe(case)}] {type(e).__name__}: {message}"
    return OpResult(op.name, len(cases), passed, worst, time.perf_counter() - start)


def format_results(results: list[OpResult]) -> str:
    head = ("op", "cases", "status", "worst case")
    body = [(r.op, str(r.cases), "ok" if r.ok else f"FAIL {r.cases - r.passed}/{r.cases}",
             r.worst or f"all passed in {r.seconds:.1f}s") for r in results]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(3)]
    lines = [" | ".join([*(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)), row[3]])
             for row in [head, *body]]
    lines.insert(1, "-+-".join("-" * w for w in widths) + "-+-" + "-" * 10)
    return "\n".join(lines)


class OpModuleBroken(RuntimeError):
    """An op module failed to import: its ops are missing from the registry."""


def select_ops(names: list[str] | None):
    """The ops named (all when None); raises KeyError for an unknown name, OpModuleBroken for an import error."""
    from kernels import registry

    registry.all_ops()
    if broken := registry.broken_modules():
        raise OpModuleBroken("op modules failed to import:\n  " + "\n  ".join(f"{m}: {e}" for m, e in broken.items()))

    if not names:
        return registry.all_ops()
    return [registry.get(n) for n in names]  # an unknown name raises KeyError listing the registered ones


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", nargs="+", metavar="OP", help="only these ops (default: every registered op)")
    parser.add_argument("--impl", default="triton", help="implementation to check (triton or a registered variant)")


def run(args: argparse.Namespace) -> int:
    interpreted = use_interpreter_without_gpu()
    import torch

    from kernels.device import triton_installed

    if args.impl != "torch" and not triton_installed():
        print(f"error: tritonforge check runs the Triton kernels (--impl {args.impl}), and triton is not installed "
              "here: pip install triton (Linux). The engine runs without it (backend 'torch'); --impl torch "
              "checks the torch references alone.", file=sys.stderr)
        return 1
    device = torch.device("cpu" if interpreted else "cuda")
    if interpreted and args.impl != "torch":
        print("no GPU visible: running the kernels in Triton's CPU interpreter (TRITON_INTERPRET=1); "
              "this checks correctness only, and slowly")
    try:
        ops = select_ops(args.ops)
    except (KeyError, OpModuleBroken) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2 if isinstance(e, KeyError) else 1
    results = []
    for op in ops:
        if args.impl not in op.impls:
            results.append(OpResult(op.name, 0, 0, f"no implementation {args.impl!r}: {sorted(op.impls)}", 0.0))
            continue
        results.append(check_op(op, device, args.impl))
    print(format_results(results))
    failed = [r.op for r in results if not r.ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} ops passed on {device.type}"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.check", description=__doc__.splitlines()[0])
    configure(parser)
    sys.exit(run(parser.parse_args()))
