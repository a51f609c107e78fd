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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_machines(out, *extra):
    """Launch machine 0 and machine 1 (one process each); their exit statuses and outputs."""
    port = free_port()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
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
    codes, outputs = two_machines(run, "--debug-crash-at-step", "7")
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

    # Both machines pruned the same heads and neurons at the same step: the main process's plan is the one-process
    # run's, and the weights trained after the draw (DDP averages the two processes' gradients parameter by
    # parameter, so a machine that had pruned others would have mixed them) are the one-process run's.
    two, one = read_json(run / "ebtrain.json"), read_json(whole / "ebtrain.json")
    assert two["draw_step"] == one["draw_step"] == 3
    assert two["shape_after"] == one["shape_after"] == {"heads": [2] * 4, "intermediate": [96] * 4}
    plan_two, plan_one = read_json(run / "plan.json"), read_json(whole / "plan.json")
    assert {k: plan_two[k] for k in plan_one if k != "provenance"} == {
        k: plan_one[k] for k in plan_one if k != "provenance"}
    a, b = weights(run), weights(whole)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=2e-4, err_msg=name)
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
