"""From timings to the sweep's rows: derived columns, the CSV, the printed table and the plot.

Pure functions of their inputs (no GPU, no timing), so the CPU tests feed them made-up timings through
exactly the code path a GPU sweep uses.

Derived columns, for a case that does F flops and must move B bytes in t ms:

    tflops = F / t,   gbps = B / t,
    roofline_ms = max(B / copy bandwidth, F / matmul rate)      (the larger term is the ``bound``)
    pct_of_ceiling = 100 * roofline_ms / t,   speedup = baseline_ms / t
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.ceilings import Ceilings

COLUMNS = [
    "op", "impl", "shape", "dtype", "median_ms", "tflops", "gbps", "pct_of_ceiling", "bound",
    "baseline", "baseline_ms", "baseline_pct_of_ceiling", "speedup", "timing", "tuned_check",
    "gpu", "copy_gbps", "matmul_tflops", "l2_mib", "commit", "date",
]
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


def dtype_name(dtype: Any) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def shape_string(case: dict[str, Any]) -> str:
    """A case without its dtype, readable: ``tokens=4096 hidden=4096 residual=True``."""
    return " ".join(f"{k}={dtype_name(v) if isinstance(v, torch.dtype) else v}"
                    for k, v in case.items() if k != "dtype")


def derive_row(*, op: str, impl: str, case: dict[str, Any], flops: float, nbytes: float, median_ms: float,
               baseline: str | None, baseline_ms: float | None, ceilings: Ceilings, timing: str,
               commit: str, date: str) -> dict[str, Any]:
    """One CSV row: the measured times plus every derived column."""
    if not (median_ms > 0 and math.isfinite(median_ms)):
        raise ValueError(f"{op}: a median time must be positive and finite, got {median_ms}")
    floor_ms, bound = ceilings.roofline_ms(flops, nbytes)
    seconds = median_ms * 1e-3
    has_baseline = baseline_ms is not None and baseline_ms > 0
    return {
        "op": op, "impl": impl, "shape": shape_string(case), "dtype": dtype_name(case.get("dtype")),
        "median_ms": median_ms,
        "tflops": flops / seconds / 1e12,
        "gbps": nbytes / seconds / 1e9,
        "pct_of_ceiling": 100.0 * floor_ms / median_ms,
        "bound": bound,
        "baseline": baseline or "",
        "baseline_ms": baseline_ms if has_baseline else "",
        "baseline_pct_of_ceiling": 100.0 * floor_ms / baseline_ms if has_baseline else "",
        "speedup": baseline_ms / median_ms if has_baseline else "",
        "timing": timing, "gpu": ceilings.gpu,
        "copy_gbps": ceilings.copy_gbps, "matmul_tflops": ceilings.matmul_tflops,
        "l2_mib": ceilings.l2_bytes / 2**20, "commit": commit, "date": date,
    }


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in COLUMNS})
    return path


def write_rows(rows: Sequence[dict[str, Any]], path: str | Path, float_format: str | None = None) -> Path | None:
    """Free-form rows (tuning studies): the columns are every key seen, in first-seen order."""
    if not rows:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = (lambda v: format(v, float_format) if isinstance(v, float) else v) if float_format else (lambda v: v)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows({k: fmt(v) for k, v in r.items()} for r in rows)
    return path


@contextlib.contextmanager
def csv_sink(path: str | Path | None, fields: Sequence[str]) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A callable that writes one row to the CSV at ``path`` (columns ``fields``) and flushes it, so that a run
    cut short keeps what it measured; with ``path`` None the rows go nowhere."""
    with open(path or os.devnull, "w", newline="") as f:
        writer = csv.DictWriter(f, list(fields))
        writer.writeheader()

        def sink(row: dict[str, Any]) -> None:
            writer.writerow(row)
            f.flush()
        yield sink


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The readable table the sweep prints: one line per case."""
    head = ["op", "impl", "dtype", "shape", "ms", "GB/s", "TFLOP/s", "% ceil", "base ms", "speedup"]
    body = [[
        str(r["op"]), str(r["impl"]), str(r["dtype"]), str(r["shape"]),
        f"{float(r['median_ms']):.4f}", f"{float(r['gbps']):.0f}", f"{float(r['tflops']):.2f}",
        f"{float(r['pct_of_ceiling']):.0f}% {r['bound'][0]}",
        f"{float(r['baseline_ms']):.4f}" if r["baseline_ms"] != "" else "-",
        f"{float(r['speedup']):.2f}x" if r["speedup"] != "" else "-",
    ] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)) for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


RESULTS = Path(__file__).resolve().parent / "results"


def results_dir(gpu: str, out: str | Path | None = None) -> Path:
    """Where a run's files go: ``out`` if given, else ``bench/results/<gpu name>/``; created if missing."""
    path = Path(out) if out else RESULTS / safe_name(gpu)
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(text: str) -> str:
    """A file or folder name from a GPU or op name: spaces to underscores, nothing odd left."""
    return re.sub(r"[^A-Za-z0-9._-]", "", text.strip().replace(" ", "_")) or "unknown"


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """% of the ceiling against bytes moved (log), kernel and baseline, one marker per dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for dtype in sorted({r["dtype"] for r in rows}):
        sel = [r for r in rows if r["dtype"] == dtype]
        mb = [float(r["gbps"]) * float(r["median_ms"]) for r in sel]  # GB/s * ms = MB moved
        ax.scatter(mb, [float(r["pct_of_ceiling"]) for r in sel], label=f"{sel[0]['impl']} {dtype}", marker="o")
        base = [(m, float(r["baseline_pct_of_ceiling"])) for m, r in zip(mb, sel, strict=True)
                if r["baseline_pct_of_ceiling"] != ""]
        if base:
            ax.scatter(*zip(*base, strict=True), label=f"{sel[0]['baseline']} {dtype}", marker="x")
    ax.axhline(100, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("MB that must move (roofline model)")
    ax.set_ylabel("% of measured ceiling")
    first = rows[0]
    ax.set_title(f"{first['op']} on {first['gpu']} (copy {float(first['copy_gbps']):.0f} GB/s, "
                 f"bf16 matmul {float(first['matmul_tflops']):.0f} TFLOP/s)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
