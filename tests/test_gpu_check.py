"""tools/gpu_check.py and the benchmarks' device handling (bench/benchlib.py), on the CPU.

The GPU validation script runs here as the test suite can: `--device cpu --tiny`, every check present in its JSON and
markdown, each passing or skipped with a reason. Its run loop is tested in-process: a failing check is recorded and
the next one still runs (exit 1), a check past the budget is skipped, results are on disk after each check.
`--device cuda` without CUDA is one line and exit status 2, in the script and in a benchmark.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(ROOT)}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", ROOT / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- benchlib.Clock


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_clock_counts_the_process_cpu_time_not_waiting():
    clock = benchlib.Clock("cpu")
    assert clock.name == "CPU time" and not clock.cuda
    with clock.span() as idle:
        time.sleep(0.2)
    assert idle.wall >= 0.2 and idle.seconds < 0.05  # a sleeping process uses no CPU time
    worked = clock.time(busy, 0.1)
    assert worked.seconds >= 0.1 and worked.wall >= worked.seconds * 0.5


def test_wall_clock_and_marks():
    clock = benchlib.Clock("cpu", cpu_clock="wall")
    assert clock.name == "wall time"
    start = clock.mark()
    time.sleep(0.1)
    middle = clock.mark()
    busy(0.02)
    end = clock.mark()
    assert clock.elapsed(start, middle) >= 0.1
    assert clock.elapsed(start, end) == pytest.approx(clock.elapsed(start, middle) + clock.elapsed(middle, end))
    assert clock.time(time.sleep, 0.05).seconds >= 0.05


def test_bf16_autocast_and_inputs_on_the_device():
    layer = torch.nn.Linear(4, 4)
    batch = benchlib.to_device({"x": torch.ones(2, 4)}, torch.device("cpu"))
    with benchlib.autocast("cpu", "bf16"):
        assert layer(batch["x"]).dtype == torch.bfloat16
    with benchlib.autocast("cpu", "fp32"):
        assert layer(batch["x"]).dtype == torch.float32


@NO_CUDA
@pytest.mark.parametrize("command", [
    ["tools/gpu_check.py", "--tiny"],  # cuda is its default
    ["bench/pruned_speed.py", "--quick", "--device", "cuda"],
])
def test_cuda_without_cuda_is_one_line_and_exit_2(command):
    proc = subprocess.run([sys.executable, *command], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--device cuda" in lines[0] and "without CUDA" in lines[0] and "--device cpu" in lines[0]


# --------------------------------------------------------------------------- the script's run loop


def test_a_failing_check_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    gpu_check = load_gpu_check()
    seen = []

    def boom(run):
        seen.append("boom")
        raise RuntimeError("kernel exploded")

    def later(run):
        seen.append("later")
        # the failed check's result is on disk before this one runs
        assert json.loads((tmp_path / "gpu_check.json").read_text())["checks"][0]["status"] == "fail"
        return {"value": 1.5, "failures": []}

    def costly(run):
        seen.append("costly")
        return {"failures": []}

    def wrong(run):
        return {"error": 3.0, "failures": ["error 3 > 1"]}

    monkeypatch.setattr(gpu_check, "CHECKS", {"boom": (boom, (1, 1), "raises"), "later": (later, (1, 1), "passes"),
                                              "costly": (costly, (10**6, 10**6), "past the budget"),
                                              "wrong": (wrong, (1, 1), "fails its criterion")})
    code = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path), "--budget-s", "100"])
    assert code == 1 and seen == ["boom", "later"]
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {c["name"]: (c["status"], c["reason"]) for c in doc["checks"]}
    assert status["boom"] == ("fail", "RuntimeError: kernel exploded")
    assert status["later"] == ("pass", "")
    assert status["costly"][0] == "skip" and status["costly"][1].startswith("budget:")
    assert status["wrong"] == ("fail", "error 3 > 1")
    assert doc["failed"] == ["boom", "wrong"] and doc["finished"]
    assert "traceback" in doc["checks"][0]
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| boom | fail |" in markdown and "| later | pass | " in markdown and "value: 1.5" in markdown


@pytest.mark.parametrize("argv, message", [
    (["--only", "probe,nope"], "--only: unknown check(s) nope"),
    (["--budget-s", "0"], "--budget-s: expected a positive number"),
])
def test_bad_flags_are_one_line(argv, message, capsys):
    gpu_check = load_gpu_check()
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(["--device", "cpu", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# --------------------------------------------------------------------------- the whole script on the CPU


def test_every_check_passes_or_skips_on_the_cpu(tmp_path):
    """The CPU pass of the GPU script (about a minute here, more on a busy machine)."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--threads", "1", "--out", str(out), "--workdir", str(tmp_path)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    doc = json.loads((out / "gpu_check.json").read_text())
    status = {c["name"]: c for c in doc["checks"]}
    failed = {n: c["reason"] + c.get("traceback", "")[-1500:] for n, c in status.items() if c["status"] == "fail"}
    assert proc.returncode == 0 and not failed, f"{failed}\n{proc.stderr[-3000:]}"
    assert list(status) == list(load_gpu_check().CHECKS) and doc["finished"]
    for name, entry in status.items():
        assert entry["status"] in ("pass", "skip"), name
        assert entry["status"] == "pass" or entry["reason"], name
    # what each check measured on the CPU
    assert status["equality"]["numbers"]["rows"][0]["fp32 max abs diff"] <= 1e-5
    assert status["soft_by_one"]["numbers"]["combinations run"] >= 4
    for name in ("fp16_loop", "fp16_trainer"):
        numbers = status[name]["numbers"]
        assert numbers["L1 part of the step (mean)"] == pytest.approx(-numbers["lr * l1"], rel=1e-3)
        assert numbers["NaN step left the coefficients as they were"]
        assert numbers["scheduler steps"] == numbers["optimizer steps taken"] < numbers["steps counted"]
    assert status["ebtrain"]["numbers"]["records max abs diff"] == 0
    markdown = (out / "gpu_check.md").read_text()
    for name in status:
        assert f"| {name} | {status[name]['status']} |" in markdown
    assert not (tmp_path / "out" / ".gpu_check.json.tmp").exists()
