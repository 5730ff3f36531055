"""benchmarks/gpu.py, the script for a lent accelerator, run on the CPU at toy sizes."""

import numpy as np

from .test_kinms_sets import _load

gpu = _load("gpu")


def test_every_section_runs_and_reports_rates_and_memory(tmp_path, capsys):
    out = tmp_path / "gpu.txt"
    rows = gpu.main(["--quick", "--device", "cpu", "--out", str(out)])
    labels = [r[0] for r in rows]
    for what in ("blind, network only", "blind, end to end", "refinement", "training",
                 "renders, forward", "renders, forward+backward"):
        assert any(label.startswith(what) for label in labels), what
    assert all(r[2] is not None and np.isfinite(r[2]) and r[2] > 0 for r in rows)
    assert all(r[3] > 0 for r in rows)
    text = out.read_text()
    assert text.startswith("# ") and "per second" in text and "refinement" in text
    assert text.strip() in capsys.readouterr().out


def test_a_spent_budget_skips_sections_and_says_so():
    rows = gpu.main(["--quick", "--device", "cpu", "--budget", "0"])
    assert all("skipped: budget" in r[0] and r[2] is None for r in rows)
    assert "-" in gpu.format_rows(rows).splitlines()[-1]
