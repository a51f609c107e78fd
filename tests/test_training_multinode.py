"""Two machines on this one: two `accelerate launch --num_machines 2 --machine_rank 0|1 --main_process_ip 127.0.0.1`
launchers of one CPU process each (gloo), sharing the output directory as machines share a filesystem, train the
digits default with slimming and EB-Train (the in-place prune under DDP), crash after a checkpoint taken after the
draw, and resume on both machines; the result is the uninterrupted one-process run at the same global batch."""

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from earlybird.records import load_records
from test_training_support import ROOT, load_script, one_thread, read_json, read_jsonl

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
# 10 steps of a global batch of 32; the Hamming rule draws at step 3 (a checkpoint every 5: the crash after step 7
# resumes from step 5, a pruned model).
RUN = ["--disable-tqdm", "--logging-steps", "2", "--max-steps", "10", "--self-slimming", "--inter-slimming",
       "--l1-self", "1e-2", "--l1-inter", "1e-2", "--eb-method", "hamming", "--eb-threshold", "1.0", "--eb-cached", "3",
       "--self-pruning-ratio", "0.5", "--inter-pruning-ratio", "0.25", "--checkpoint-every", "5"]
LIMIT_S = 240  # per pair of launchers: a hang (a rank waiting for the other) fails instead of blocking the suite
# Loaded by every process the launchers start (a sitecustomize on PYTHONPATH): each rank writes the plan it pruned its
# own model with, so the test sees machine 1's too (only the main process writes the run's plan.json). Note that
# DDP's re-wrap after the prune broadcasts rank 0's weights, so the weights alone would not show a rank that pruned
# other heads of the same shapes.
RANK_HOOK = """
import json, os
if os.environ.get("RANK") is not None and os.environ.get("EARLYBIRD_TEST_PLANS"):
    from earlybird.training import loop

    prune_in_place = loop.Trainer._prune_in_place

    def _prune_in_place(self):
        plan = prune_in_place(self)
        pruned = {key: value for key, value in plan.items() if key.startswith("pruned_")}
        with open(os.path.join(os.environ["EARLYBIRD_TEST_PLANS"], "rank-" + os.environ["RANK"] + ".json"), "w") as f:
            json.dump({"step": self.step, **pruned}, f)
        return plan

    loop.Trainer._prune_in_place = _prune_in_place
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_machines(out, *extra, plans=None):
    """Launch machine 0 and machine 1 (one process each); their exit statuses and outputs. With `plans` (a
    directory), each rank writes there the plan it pruned with."""
    port = free_port()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if plans is not None:
        (plans / "hook").mkdir(parents=True)
        (plans / "hook" / "sitecustomize.py").write_text(RANK_HOOK)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plans / "hook"), env.get("PYTHONPATH")]))
        env["EARLYBIRD_TEST_PLANS"] = str(plans)
    accelerate = ROOT / ".venv" / "bin" / "accelerate"
    if not accelerate.exists():
        accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    procs = []
    try:
        for rank in (0, 1):
            command = ["timeout", "-k", "10", str(LIMIT_S), str(accelerate), "launch", "--multi_gpu",
                       "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                       "--main_process_port", str(port), "--num_processes", "2", "--mixed_precision", "no",
                       "--dynamo_backend", "no", str(ROOT / "ViT_pretraining/main.py"), "--output-dir", str(out),
                       "--per-device-train-batch-size", "16", *RUN, *extra]
            procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, start_new_session=True))
        outputs = [p.communicate(timeout=LIMIT_S + 30)[0] for p in procs]
        return [p.returncode for p in procs], outputs
    finally:
        for p in procs:  # whatever is left of a failed launch (torchrun's workers included)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def weights(run):
    return load_file(run / "final" / "model.safetensors")


def test_two_machines_prune_alike_save_once_and_resume(tmp_path):
    run = tmp_path / "two-machines"
    plans = tmp_path / "plans"
    codes, outputs = two_machines(run, "--debug-crash-at-step", "7", plans=plans)
    assert codes == [1, 1], outputs  # both stopped (torchrun reports the workers' exit status 3 as a failure)
    assert "stopped at step 7" in outputs[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-5"]
    # one checkpoint in the shared directory: the main process's model and state, each process's RNG
    assert sorted(p.name for p in (run / "checkpoints" / "step-5").iterdir()) == [
        "model", "optimizer.pt", "rng-0.pt", "rng-1.pt", "scheduler.pt", "state.json"]

    codes, outputs = two_machines(run, "--resume")
    assert codes == [0, 0], outputs
    assert f"resuming from {run / 'checkpoints' / 'step-5'}" in outputs[0]
    assert "resuming" not in outputs[1]  # only the main process speaks

    whole = tmp_path / "one-process"
    with one_thread():
        assert pretrain.main(["--output-dir", str(whole), "--per-device-train-batch-size", "32", *RUN]) == 0

    # Both machines pruned the same heads and neurons at the same step, the one-process run's, and trained the same
    # weights.
    two, one = read_json(run / "ebtrain.json"), read_json(whole / "ebtrain.json")
    assert two["draw_step"] == one["draw_step"] == 3
    assert two["shape_after"] == one["shape_after"] == {"heads": [2] * 4, "intermediate": [96] * 4}
    plan = read_json(whole / "plan.json")
    assert read_json(run / "plan.json") == plan
    pruned = {"step": 3, **{key: value for key, value in plan.items() if key.startswith("pruned_")}}
    assert read_json(plans / "rank-0.json") == read_json(plans / "rank-1.json") == pruned
    a, b = weights(run), weights(whole)
    assert sorted(a) == sorted(b)
    for name in a:
        # Adam moves a weight whose gradient is ~0 by ~lr whatever its sign, so a few elements differ by up to
        # ~2e-4 (the all-reduce sums in another order); on average a tensor differs by ~2e-6 (measured)
        difference = np.abs(a[name] - b[name])
        assert difference.mean() < 2e-5 and difference.max() < 2e-3, (name, difference.mean(), difference.max())
    # written once, by the main process, across the crash: no duplicated records or lines
    records_two, records_one = load_records(run / "records"), load_records(whole / "records")
    assert records_two.steps.tolist() == records_one.steps.tolist() == [1, 2, 3]
    np.testing.assert_allclose(records_two.msa, records_one.msa, atol=1e-5)
    assert [l["step"] for l in read_jsonl(run / "metrics.jsonl") if l["type"] == "train"] == [2, 4, 6, 8, 10]
    assert read_json(run / "results.json")["step"] == 10
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".tmp")) == []
    assert len(list((run / "final").glob("*.safetensors"))) == 1
    assert read_json(run / "results.json")["accuracy"] == pytest.approx(read_json(whole / "results.json")["accuracy"],
                                                                        abs=0.02)
