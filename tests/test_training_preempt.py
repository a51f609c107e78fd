"""Preemption and `--resume auto`, with real signals to real child processes.

A SIGTERM (a scheduler) or SIGINT (Ctrl-C) finishes the current optimizer step, writes a checkpoint, flushes the
records, empties `.lock`, prints one line and exits 128 + the signal's number (or --exit-code-on-preempt); `--resume`
then ends with the uninterrupted run's records, metrics, results and final weights, bitwise. The signals come from
earlybird.faults (`step:sigterm@S`: a real os.kill at optimizer step S, so the step is known), in one process forked
by the fault server, and in two processes under `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes 2` (gloo) -- the signal sent to one rank only, and to the launcher's whole process group.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from test_reliability_faults import (  # noqa: F401 (server and reference: the fork server and uninterrupted run)
    RUN, STEPS, assert_same_as_reference, records_of, reference, server, train_losses)
from test_reliability_support import ROOT, child_env, digests


def final_weights(run):
    return digests(run / "final")


def assert_stopped_at(run, result, step, code):
    assert result.code == code, result
    lines = [line for line in result.output.splitlines() if "stopped by" in line]
    assert len(lines) == 1 and f"at step {step} of {STEPS}" in lines[0], result
    assert "Traceback" not in result.output, result
    assert (run / "checkpoints" / f"step-{step}" / "state.json").is_file()
    assert records_of(run)[0] == list(range(1, step + 1))  # flushed to the stop, no more
    assert (run / ".lock").read_text() == ""  # released: the next run takes it silently
    assert not (run / "results.json").exists()


@pytest.mark.parametrize("how, code", [("sigterm", 143), ("sigint", 130)])
def test_a_signal_stops_at_a_checkpoint_and_resume_is_bitwise(how, code, server, reference, tmp_path):
    run = tmp_path / "run"
    stopped = server.run("pretrain", ["--output-dir", run, *RUN], fault=f"step:{how}@6")
    assert_stopped_at(run, stopped, 6, code)
    resumed = server.run("pretrain", ["--output-dir", run, *RUN, "--resume"])
    assert resumed.code == 0, resumed
    assert "stale lock" not in resumed.output
    assert_same_as_reference(run, reference)
    assert final_weights(run) == final_weights(reference)


def test_the_exit_status_is_configurable_and_a_checkpoint_step_is_not_saved_twice(server, reference, tmp_path):
    run = tmp_path / "run"
    stopped = server.run("pretrain", ["--output-dir", run, *RUN, "--exit-code-on-preempt", "75"],
                         fault="step:sigterm@8")  # step 8 is also a --checkpoint-every 4 step
    assert_stopped_at(run, stopped, 8, 75)
    resumed = server.run("pretrain", ["--output-dir", run, *RUN, "--resume"])
    assert resumed.code == 0, resumed
    assert_same_as_reference(run, reference)


def test_a_second_ctrl_c_exits_at_once_and_the_previous_checkpoint_is_resumed(server, reference, tmp_path):
    run = tmp_path / "run"
    # Ctrl-C after step 6, and again while its checkpoint is being written (the 2nd checkpoint save: 4, then 6)
    stopped = server.run("pretrain", ["--output-dir", run, *RUN], fault="step:sigint@6,checkpoint-save:sigint@2")
    assert stopped.code == 130, stopped
    [line] = [line for line in stopped.output.splitlines() if "SIGINT" in line]
    assert line.startswith("main.py: second SIGINT: exiting at once, without a checkpoint"), line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [".tmp-step-6", "step-4"]  # never resumed from
    resumed = server.run("pretrain", ["--output-dir", run, *RUN, "--resume"])
    assert resumed.code == 0, resumed
    assert_same_as_reference(run, reference)


def test_one_command_line_for_every_submission(server, reference, tmp_path):
    """What a scheduler does: the same command each time (`--resume auto`), whatever happened to the previous job."""
    run = tmp_path / "run"
    command = ["--output-dir", run, *RUN, "--resume", "auto"]
    killed = server.run("pretrain", command, fault="step:kill@2")  # SIGKILL before the first checkpoint (step 4)
    assert killed.code == -signal.SIGKILL and not (run / "checkpoints").exists()
    preempted = server.run("pretrain", command, fault="step:sigterm@6")  # starts it over, then a SIGTERM at step 6
    assert "holds a run stopped before its first checkpoint" in preempted.output and "starting it over" in \
        preempted.output
    assert_stopped_at(run, preempted, 6, 143)
    finished = server.run("pretrain", command)  # continues from step 6
    assert finished.code == 0, finished
    assert_same_as_reference(run, reference)
    assert final_weights(run) == final_weights(reference)
    before = digests(run)
    again = server.run("pretrain", command)  # resubmitted once more: a finished run stays as it is
    assert again.code == 0 and "nothing to resume" in again.output, again
    assert digests(run) == before


# --------------------------------------------------------------------------- two processes


def launch(run, extra_env: dict, *flags):
    """Two CPU processes through accelerate launch (torchrun), in their own process group."""
    env = {**child_env(), "ACCELERATE_USE_CPU": "1", **extra_env}
    command = [str(ROOT / ".venv" / "bin" / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", "0", str(ROOT / "ViT_pretraining" / "main.py"),
               "--output-dir", str(run), *TWO, *flags]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          start_new_session=True)


# 16 per device x 2 processes = RUN's global batch of 32
TWO = [*RUN[:RUN.index("--per-device-train-batch-size")], "--per-device-train-batch-size", "16",
       *RUN[RUN.index("--per-device-train-batch-size") + 2:]]


@pytest.fixture(scope="module")
def two_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("two-reference") / "run"
    done = launch(out, {})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("target", ["rank 1 only", "the whole process group"])
def test_two_processes_stop_together_and_resume_bitwise(target, two_reference, tmp_path):
    run = tmp_path / "run"
    if target == "rank 1 only":  # rank 0 never sees it: the flag reaches it through the per-step all-reduce
        env = {"EARLYBIRD_FAULT": "step:sigterm@5", "EARLYBIRD_FAULT_RANK": "1"}
    else:  # the launcher and both workers get it (the launcher forwards it again: a second SIGTERM, ignored)
        env = {"EARLYBIRD_FAULT": "step:sigterm-group@5", "EARLYBIRD_FAULT_RANK": "0"}
    stopped = launch(run, env)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 1, output[-3000:]  # torchrun reports a worker's non-zero status as 1
    # one step after the signal (read a step later, so that no process waits on the step it has just queued)
    step = 6
    assert output.count(f"stopped by SIGTERM at step {step} of {STEPS}") == 1, output[-3000:]
    assert sorted(p.name for p in (run / "checkpoints" / f"step-{step}").iterdir()) == [
        "model", "optimizer.pt", "rng-0.pt", "rng-1.pt", "scheduler.pt", "state.json"]
    assert records_of(run)[0] == list(range(1, step + 1))
    assert (run / ".lock").read_text() == ""
    resumed = launch(run, {}, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = records_of(run), records_of(two_reference)
    assert a[0] == b[0] and (a[1] == b[1]).all() and (a[2] == b[2]).all()
    assert train_losses(run) == train_losses(two_reference)
    assert json.loads((run / "results.json").read_text())["accuracy"] == \
        json.loads((two_reference / "results.json").read_text())["accuracy"]
    assert final_weights(run) == final_weights(two_reference)


EB = ["--eb-method", "hamming", "--eb-threshold", "1.0", "--eb-cached", "3", "--self-pruning-ratio", "0.5"]


def test_two_processes_ebtrain_stopped_after_the_draw_keeps_its_result(tmp_path):
    """EB-Train under two processes, stopped after the draw (SIGTERM to rank 1) and resumed: ebtrain.json -- the
    detector's trace included -- is the uninterrupted run's."""
    whole, run = tmp_path / "whole", tmp_path / "run"
    done = launch(whole, {}, *EB)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = json.loads((whole / "ebtrain.json").read_text())
    assert expected["draw_step"] == 3 and expected["detectors"]["msa"]["trace"]
    stopped = launch(run, {"EARLYBIRD_FAULT": "step:sigterm@8", "EARLYBIRD_FAULT_RANK": "1"}, *EB)
    assert "stopped by SIGTERM at step 9 of 16" in stopped.stdout + stopped.stderr, stopped.stderr[-3000:]
    resumed = launch(run, {}, "--resume")  # without the EB-Train flags: they come from the run's args.json
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = json.loads((run / "ebtrain.json").read_text())
    assert {k: v for k, v in got.items() if k != "wall_s"} == {k: v for k, v in expected.items() if k != "wall_s"}
