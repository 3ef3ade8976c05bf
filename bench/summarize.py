"""Summarise sweep CSVs against the project's targets: ``python -m bench.summarize DIR``.

Per op and dtype: the % of the measured ceiling over the cases whose bytes exceed twice L2 (where the
ceiling applies; smaller cases are latency-bound), and the slowest speedup over the baseline at any size.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bench.report import read_csv


def summarize(rows: list[dict], l2_mib: float) -> list[str]:
    """One line per (op, impl, dtype); ``l2_mib`` decides which cases count as beyond L2."""
    lines = []
    for key in sorted({(r["op"], r["impl"], r["dtype"]) for r in rows}):
        sel = [r for r in rows if (r["op"], r["impl"], r["dtype"]) == key]
        big = [r for r in sel if float(r["gbps"]) * float(r["median_ms"]) > 2 * l2_mib * 1.048576]  # MB vs MiB
        speedups = [(float(r["speedup"]), r["shape"]) for r in sel if r["speedup"] != ""]
        line = f"{key[0]:<14} {key[1]:<8} {key[2]:<5} cases {len(sel):3d}"
        if big:
            pcts = sorted((float(r["pct_of_ceiling"]), r["shape"]) for r in big)
            line += (f" | beyond 2xL2 ({len(big)}): min {pcts[0][0]:5.1f}% median "
                     f"{statistics.median(p for p, _ in pcts):5.1f}% (min at {pcts[0][1]})")
        if speedups:
            worst = min(speedups)
            line += f" | slowest speedup {worst[0]:.2f}x at {worst[1]}"
        lines.append(line)
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    folder = Path(argv[0])
    rows = [r for path in sorted(folder.glob("*.csv")) if not path.name.startswith("tune")
            for r in read_csv(path)]
    if not rows:
        print(f"no sweep CSVs in {folder}", file=sys.stderr)
        return 1
    l2_mib = float(rows[0].get("l2_mib") or 50.0)  # CSVs written before the column existed: H100's 50 MiB
    print(f"{rows[0]['gpu']}: copy {float(rows[0]['copy_gbps']):.0f} GB/s, L2 {l2_mib:.0f} MiB")
    print("\n".join(summarize(rows, l2_mib)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
