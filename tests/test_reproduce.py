"""`bash reproduce.sh --smoke`: the whole pipeline on a few dozen steps, and its report's numbers come from its runs."""

import json
import subprocess
from pathlib import Path

from earlybird.detectors import scaled_params

REPO = Path(__file__).resolve().parents[1]


def test_reproduce_smoke(tmp_path):
    out = tmp_path / "study"
    result = subprocess.run(["bash", str(REPO / "reproduce.sh"), "--smoke"], cwd=REPO, capture_output=True,
                            text=True, env={"OUT": str(out), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = out / "report.md"
    assert f"report: {report}" in result.stdout + result.stderr
    text = report.read_text()
    runs = out / "runs"
    # every fixed-fraction ticket and every detector's draw was retrained and is in the report
    draws = json.loads((out / "draws.json").read_text())
    total = 40
    assert draws["stationarity_params"] == scaled_params("slope", total)[0]
    for fraction in (0.0, 0.04, 0.07, 0.20, 0.44, 0.80):
        step = max(1, round(fraction * total))
        for ratio in (30, 80):
            ticket = runs / f"ticket-s{step}-r{ratio}"
            accuracy = json.loads((ticket / "results.json").read_text())["accuracy"]
            assert f"{100 * accuracy:.1f}" in text
    for key, step in draws.items():
        if "@" in key and step is not None:
            ratio = int(round(float(key.split("@")[1]) * 100))
            assert (runs / f"ticket-s{step}-r{ratio}" / "final" / "config.json").exists()
    dense = json.loads((runs / "dense" / "results.json").read_text())["accuracy"]
    assert f"Dense reference: accuracy **{100 * dense:.1f}**" in text
    eb = json.loads((runs / "ebtrain-slope" / "ebtrain.json").read_text())
    assert "## EB-Train against dense training" in text and "`ebtrain-slope`" in text
    assert eb["total_steps"] == total
    for png in ("hamming_distances.png", "coefficients.png", "pvalues_msa_30.png", "nuclear_norm_msa_80.png"):
        assert (out / png).stat().st_size > 5000
    assert (out / "logs" / "slim.log").exists()
