"""Kill, disk full, read-only and two writers: a slimming run (ViT_pretraining/main.py on the embedded digits)
is SIGKILLed or starved of disk at precise points (earlybird.faults), and must leave readable records, a
complete last checkpoint, and a --resume that ends with exactly the records of an uninterrupted run."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from earlybird.records import load_records
from test_reliability_support import ForkServer, digests

STEPS = 16
# checkpoints at 4, 8, 12, 16; records flushed when 3 rows are buffered and at every checkpoint:
# flush #1 at step 3 (rows 1-3), #2 at 4 (row 4), #3 at 7, #4 at 8, #5 at 11, #6 at 12, #7 at 15, #8 at 16
RUN = ["--disable-tqdm", "--logging-steps", "5", "--per-device-train-batch-size", "32", "--dropout", "0.1",
       "--self-slimming", "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2", "--max-steps", str(STEPS),
       "--checkpoint-every", "4", "--record-chunk", "3", "--max-eval-samples", "100"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ForkServer(tmp_path_factory.mktemp("fork-logs"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = server.run("pretrain", ["--output-dir", out, *RUN])
    assert result.code == 0, result
    return out


def records_of(run):
    records = load_records(run / "records")
    return records.steps.tolist(), np.array(records.msa), np.array(records.mlp)


def train_losses(run):
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(line["step"], line["loss"]) for line in lines if line["type"] == "train"]


def assert_same_as_reference(run, reference):
    steps, msa, mlp = records_of(run)
    ref_steps, ref_msa, ref_mlp = records_of(reference)
    assert steps == ref_steps == list(range(1, STEPS + 1))  # no gap, no duplicate
    assert np.array_equal(msa, ref_msa) and np.array_equal(mlp, ref_mlp)  # bitwise
    assert train_losses(run) == train_losses(reference)
    assert json.loads((run / "results.json").read_text())["accuracy"] == \
        json.loads((reference / "results.json").read_text())["accuracy"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-12", "step-16"]  # no .tmp-/.old- left


def assert_consistent_after_a_crash(run):
    """Records load (contiguous from step 1), and every published checkpoint is complete."""
    steps = load_records(run / "records").steps.tolist()
    assert steps == list(range(1, len(steps) + 1))
    checkpoints = [p for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")]
    assert checkpoints, "a checkpoint exists before each kill point used here"
    for checkpoint in checkpoints:
        state = json.loads((checkpoint / "state.json").read_text())
        assert state["step"] == int(checkpoint.name.split("-")[1])
        for name in ("optimizer.pt", "scheduler.pt", "rng-0.pt", "model/config.json", "model/model.safetensors"):
            assert (checkpoint / name).is_file(), (checkpoint, name)
        assert state["step"] <= len(steps)  # the records cover every checkpoint
    return steps


STEP_KILL = random.Random(20240611).randint(5, STEPS - 1)  # "a random moment", fixed so failures reproduce

KILLS = {
    # point: (EARLYBIRD_FAULT, rows committed on disk after the kill, newest complete checkpoint)
    "mid-flush, rows written, no header updated": ("records-append:kill@3", 4, 4),
    "mid-flush, block headers updated, steps.npy not": ("records-commit:kill@4", 7, 4),
    "mid-checkpoint, model saved, optimizer not": ("checkpoint-save:kill@2", 8, 4),
    "checkpoint renamed, old ones not yet removed": ("checkpoint-commit:kill@3", 12, 12),
    f"after optimizer step {STEP_KILL}, before recording it": (f"step:kill@{STEP_KILL}", None, None),
}


@pytest.mark.parametrize("moment", list(KILLS))
def test_sigkill_then_resume_gives_the_uninterrupted_records(moment, server, reference, tmp_path):
    fault, rows, newest = KILLS[moment]
    run = tmp_path / "run"
    killed = server.run("pretrain", ["--output-dir", run, *RUN], fault=fault)
    assert killed.code == -signal.SIGKILL, killed
    steps = assert_consistent_after_a_crash(run)
    if rows is not None:
        assert len(steps) == rows
        assert max(int(p.name[5:]) for p in (run / "checkpoints").glob("step-*")) == newest
    resumed = server.run("pretrain", ["--output-dir", run, *RUN, "--resume"])
    assert resumed.code == 0, resumed
    assert_same_as_reference(run, reference)


def test_killed_again_while_resuming(server, reference, tmp_path):
    """Three kills in a row -- mid-flush, mid-checkpoint of the resumed run, mid-flush again -- then a clean resume."""
    run = tmp_path / "run"
    assert server.run("pretrain", ["--output-dir", run, *RUN], fault="records-append:kill@3").code == -9
    for fault in ("checkpoint-save:kill@1", "records-commit:kill@2"):
        result = server.run("pretrain", ["--output-dir", run, *RUN, "--resume"], fault=fault)
        assert result.code == -9, result
        assert_consistent_after_a_crash(run)
    assert server.run("pretrain", ["--output-dir", run, *RUN, "--resume"]).code == 0
    assert_same_as_reference(run, reference)


# --------------------------------------------------------------------------- disk full


@pytest.mark.parametrize("fault, path, rows, newest", [
    ("records-append:enospc@3", "records/steps.npy", 4, 4),   # the 3rd flush (step 7) fails
    ("checkpoint-save:enospc@2", "checkpoints/.tmp-step-8/optimizer.pt", 8, 4),  # the 2nd checkpoint fails
])
def test_disk_full_stops_with_the_path_and_keeps_what_was_written(fault, path, rows, newest, server, reference,
                                                                  tmp_path):
    run = tmp_path / "run"
    full = server.run("pretrain", ["--output-dir", run, *RUN], fault=fault)
    assert full.code == 1, full
    [line] = full.errors()
    assert line.startswith("main.py: error: cannot write ") and str(run / path) in line, line
    assert "No space left on device" in line and f"records to step {rows}" in line and "--resume" in line
    assert load_records(run / "records").steps.tolist() == list(range(1, rows + 1))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"step-{newest}"]  # no half checkpoint
    assert not (run / "results.json").exists()
    resumed = server.run("pretrain", ["--output-dir", run, *RUN, "--resume"])  # space freed: go on
    assert resumed.code == 0, resumed
    assert_same_as_reference(run, reference)


def footprint(path) -> int:
    """Bytes a tree takes on a tmpfs (whole 4 KiB pages per file)."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in files)


@pytest.fixture
def small_filesystem(tmp_path, reference):
    """A real tmpfs (root with mount rights only) with room for init/, the records and one checkpoint, not two."""
    checkpoint = footprint(reference / "checkpoints" / "step-16")
    size = sum(footprint(reference / name) for name in ("init", "records", "args.json")) + checkpoint * 3 // 2
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}): the ENOSPC hook tests above cover this")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_real_full_disk(small_filesystem, server, reference):
    """No hook: the filesystem fills up for real (torch.save reports it as a RuntimeError, not an OSError)."""
    run = small_filesystem / "run"
    full = server.run("pretrain", ["--output-dir", run, *RUN])
    assert full.code == 1, full
    [line] = full.errors()
    assert line.startswith(f"main.py: error: cannot write {run / 'checkpoints' / '.tmp-step-8'}") and \
        "No space left on device" in line, line
    steps = assert_consistent_after_a_crash(run)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # the half checkpoint is gone
    assert f"records to step {steps[-1]}" in line
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_filesystem)], check=True)  # space freed
    resumed = server.run("pretrain", ["--output-dir", run, *RUN, "--resume"])
    assert resumed.code == 0, resumed
    assert_same_as_reference(run, reference)


def test_unwritable_output_directory_is_refused_before_training(server, tmp_path):
    # root ignores permission bits, so: a read-only kernel filesystem, and a path under a regular file
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for output, expected in (("/sys/earlybird-reliability-test/run", "is not writable: cannot create a file in /sys"),
                             (blocker / "run", f"{blocker} is a file, not a directory")):
        result = server.run("pretrain", ["--output-dir", output, *RUN])
        assert result.code == 2, result
        [line] = result.errors()
        assert line.startswith("main.py: error: --output-dir ") and expected in line, line
        assert "training" not in result.output and "steps, global batch" not in result.output


# --------------------------------------------------------------------------- one writer

HOLDER = """
import sys, time
from earlybird.training.rundir import RunDir
run = RunDir(sys.argv[1])
run.open(overwrite=False)
print("locked", flush=True)
time.sleep(600)
"""


def test_a_live_run_keeps_its_directory_and_a_dead_ones_lock_is_taken_over(server, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "checkpoints" / "step-16")  # so that --resume has steps left to train
    (run / "results.json").unlink()  # (a run with results.json has finished: --resume would leave it)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = digests(run)
        for flags in ([], ["--resume"], ["--overwrite-output-dir"]):
            result = server.run("pretrain", ["--output-dir", run, *RUN, *flags])
            assert result.code == 2, (flags, result)
            [line] = result.errors()
            assert f"is in use by another run (pid {holder.pid} holds {run / '.lock'})" in line, line
            assert digests(run) == before, flags  # byte for byte, the holder's .lock included
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # The holder died without cleaning up: its pid is still in .lock, but the lock is free.
    assert (run / ".lock").read_text() == str(holder.pid)
    resumed = server.run("pretrain", ["--output-dir", run, *RUN, "--resume"])
    assert resumed.code == 0, resumed
    assert f"note: took over the stale lock {run / '.lock'} of pid {holder.pid} (no longer running" in resumed.output
    assert (run / ".lock").read_text() == ""  # a clean exit leaves no pid behind: the next run takes it silently
    assert records_of(run)[0] == list(range(1, STEPS + 1))
    again = server.run("pretrain", ["--output-dir", run, *RUN, "--resume"])
    assert again.code == 0 and "stale lock" not in again.output, again


def test_the_fault_hook_is_inert_unless_set():
    from earlybird import faults

    assert "EARLYBIRD_FAULT" not in __import__("os").environ and faults.FAULTS == {}
    for _ in range(3):
        faults.hit("records-append")  # nothing happens, nothing is counted
    assert faults._counts == {} and not faults.armed("step")
    assert faults.parse("records-append:kill@2, step:enospc") == {"records-append": ("kill", 2),
                                                                  "step": ("enospc", 1)}
    for bad in ("records-append", "step:explode@1", "step:kill@0", "step:kill@x"):
        with pytest.raises(ValueError, match="EARLYBIRD_FAULT: bad entry"):
            faults.parse(bad)
