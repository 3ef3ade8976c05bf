"""Executes notebooks/kernel_walkthrough.ipynb top to bottom: its code cells, in order, in one namespace.

No Jupyter kernel: the notebook's JSON is read with the standard library. On a CPU (the interpreter is on,
set by conftest) the sweep cell runs the correctness pass and the roofline cell draws the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "kernel_walkthrough.ipynb"


@pytest.mark.notebook
def test_kernel_walkthrough_runs_top_to_bottom(monkeypatch, capsys):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    namespace: dict = {"__name__": "__main__"}
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        try:
            exec(compile(source, f"{NOTEBOOK.name}[code cell {i}]", "exec"), namespace)
        except Exception as e:  # re-raised as a failure that names the cell and shows its source
            raise AssertionError(f"code cell {i} failed: {type(e).__name__}: {e}\n---\n{source}") from e
    out = capsys.readouterr().out
    assert "smoke cases match the reference" in out
    assert namespace["rc"] == 0, "the sweep cell (timing on a GPU, correctness on a CPU) failed"
    assert namespace["max_error"] < 0.05
    assert namespace["ROOFLINE_PNG"].read_bytes()[:4] == b"\x89PNG"
