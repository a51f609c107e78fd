"""`bash reproduce.sh --smoke`: the whole pipeline on a few dozen steps, and its report's numbers come from its runs."""

import json
import subprocess
from pathlib import Path

from earlybird.detectors import scaled_params

REPO = Path(__file__).resolve().parents[1]


def smoke(out, tmp_path, *flags):
    return subprocess.run(["bash", str(REPO / "reproduce.sh"), "--smoke", *flags], cwd=REPO, capture_output=True,
                          text=True, env={"OUT": str(out), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "ACCELERATE_USE_CPU": "1"},  # a CPU test on a GPU box too
                          timeout=600)


def test_reproduce_smoke(tmp_path):
    out = tmp_path / "study"
    result = smoke(out, tmp_path)
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

    # A second pass into the same directory reuses every finished run (nothing retrained) and writes the same report.
    finished = {p: p.stat().st_mtime_ns for p in runs.glob("*/results.json")}
    again = smoke(out, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused" in again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/results.json")} == finished
    assert report.read_text() == text

    # A pass under the other profile retrains only its own draws and EB-Train; the draws of both are kept side by side.
    other = smoke(out, tmp_path, "--profile", "original")
    assert other.returncode == 0, other.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/results.json") if p in finished} == finished
    both = json.loads((out / "draws.json").read_text())
    assert {k: v for k, v in both.items() if "@" in k and ":" not in k} == {k: v for k, v in draws.items() if "@" in k}
    assert both["stationarity_params"] == draws["stationarity_params"] and both["profiles"] == ["paper", "original"]
    original = {k: v for k, v in both.items() if k.startswith("original:") and "@" in k}
    assert len(original) == len([k for k in draws if "@" in k])
    for key, step in original.items():
        if step is not None:
            ratio = int(round(float(key.split("@")[1]) * 100))
            assert (runs / f"ticket-s{step}-r{ratio}" / "results.json").exists()
    assert (runs / "ebtrain-slope-original" / "results.json").exists()
    assert json.loads((runs / "ebtrain-slope-original" / "args.json").read_text())["eb_profile"] == "original"
    assert "original" in (out / "report-original" / "report.md").read_text() and report.read_text() == text


def test_a_finished_job_is_reused_only_with_the_same_command_and_code(tmp_path):
    from earlybird.reproduce import Jobs

    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    jobs = Jobs(tmp_path, force=False, log=print)
    jobs.finished("a", ["--seed", "1"])
    assert not Jobs(tmp_path, False, print).reusable("a", ["--seed", "1"], run)  # no results.json: unfinished
    (run / "results.json").write_text("{}")
    assert Jobs(tmp_path, False, print).reusable("a", ["--seed", "1"], run)
    assert not Jobs(tmp_path, False, print).reusable("a", ["--seed", "2"], run)
    assert not Jobs(tmp_path, True, print).reusable("a", ["--seed", "1"], run)  # --force
    other = Jobs(tmp_path, False, print)
    other.version = "another version"
    assert not other.reusable("a", ["--seed", "1"], run)
