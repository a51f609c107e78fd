"""Through `accelerate launch` and the bash scripts: two CPU processes (gloo) with EB-Train pruning in place
under DDP, compared with one process at the same global batch; the scripts' commands and overrides; on a GPU
machine (a fake `nvidia-smi`) the suite's runs stay on the CPU and a CPU torch is refused; GLOBAL_BATCH, the steps
and the ticket's prune step do not depend on the number of processes; several machines."""

import json
import os
import shlex
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from earlybird.records import load_records
from earlybird.training.loop import step_budget
from earlybird.training.tasks import PRETRAIN_PRESETS
from test_training_support import ROOT, load_script, one_thread, read_json, read_jsonl

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
EB = "--eb-method hamming --eb-threshold 1.0 --eb-cached 3 --self-pruning-ratio 0.5 --disable-tqdm --logging-steps 2"


def script_env(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "ACCELERATE": str(ROOT / ".venv" / "bin" / "accelerate")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def fake_slim_run(path, steps: int):
    """A finished slimming run of `steps` optimizer steps, every step recorded (tiny coefficients)."""
    records = path / "records"
    records.mkdir(parents=True)
    for block in ("msa", "mlp"):
        np.save(records / f"{block}.npy", np.ones((steps, 1, 2), np.float32))
    np.save(records / "steps.npy", np.arange(1, steps + 1))
    (path / "results.json").write_text(json.dumps({"kind": "slim", "step": steps}))
    return path


def dry_run(script, **env):
    """The command a script would launch (DRY_RUN=1), as a list of words."""
    proc = subprocess.run(["bash", str(ROOT / script)], capture_output=True, text=True, timeout=120,
                          env=script_env(DRY_RUN=1, **env))
    assert proc.returncode == 0, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("+ ")
    return shlex.split(line[2:])


def value(command, flag):
    return command[command.index(flag) + 1] if flag in command else None


# Run on a GPU machine (as the scripts see one: a fake nvidia-smi) the suite's script tests stay on the CPU
# (tests/conftest.py sets DEVICE=cpu); before DEVICE existed, launch.bash dropped --cpu whenever nvidia-smi answered.
@pytest.mark.usefixtures("fake_gpu")
def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    two = tmp_path / "two"
    proc = subprocess.run(
        ["bash", str(ROOT / "ViT_pretraining/scripts/slimming.sh")], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env=script_env(DATASET="digits", NUM_PROCESSES=2, MAX_STEPS=10, GLOBAL_BATCH=32, WORKERS=0,
                                    OUTPUT_DIR=two, CHECKPOINT_EVERY=5, CHECKPOINT_MINUTES="1e-9", L1_SELF="1e-2",
                                    L1_INTER="1e-2", EXTRA_ARGS=EB))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ACCELERATE_USE_CPU=1" in proc.stderr and "--multi_gpu --num_processes 2" in proc.stderr  # N CPU processes
    assert "16 per device x 2 processes" in proc.stdout

    one = tmp_path / "one"
    with one_thread():
        assert pretrain.main(["--output-dir", str(one), "--max-steps", "10", "--per-device-train-batch-size", "32",
                              "--self-slimming", "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2",
                              *EB.split()]) == 0
    # written once, by the main process: no duplicated rows or lines
    a, b = load_records(two / "records"), load_records(one / "records")
    assert a.steps.tolist() == b.steps.tolist() == [1, 2, 3]
    np.testing.assert_allclose(a.msa, b.msa, atol=1e-5)
    np.testing.assert_allclose(a.mlp, b.mlp, atol=1e-5)
    steps = [l["step"] for l in read_jsonl(two / "metrics.jsonl") if l["type"] == "train"]
    assert steps == [2, 4, 6, 8, 10]
    # by steps at 5 and 10, by minutes at every logging step but the last (2, 4, 6, 8): the main process's clock,
    # carried by the loss all-reduce, so both processes saved together (one alone would have hung the other)
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-10", "step-8"]
    assert sorted(p.name for p in (two / "checkpoints" / "step-10").iterdir()) == [
        "model", "optimizer.pt", "rng-0.pt", "rng-1.pt", "scheduler.pt", "state.json"]
    # EB-Train pruned in place on both processes at the same step (DDP re-prepared around the smaller model)
    summaries = read_json(two / "ebtrain.json"), read_json(one / "ebtrain.json")
    assert summaries[0]["draw_step"] == summaries[1]["draw_step"] == 3
    assert summaries[0]["shape_after"] == summaries[1]["shape_after"] == {"heads": [2] * 4, "intermediate": [128] * 4}
    assert read_json(two / "results.json")["accuracy"] == pytest.approx(read_json(one / "results.json")["accuracy"], abs=0.02)


SCRIPTS = {
    "Finetuning/scripts/slim_vit.bash": ["run_vit.py", "--model-name-or-path google/vit-base-patch16-224-in21k",
                                         "--dataset imagenet-1k", "--self-slimming --inter-slimming"],
    "Finetuning/scripts/slim_llm.bash": ["run_bert.py", "--model-name-or-path bert-base-uncased", "--task squad",
                                         "--max-seq-length 384", "--doc-stride 128"],
    # the prune step: 20% (PRUNE_FRACTION) of the slimming run's 14774 steps (its results.json)
    "Finetuning/scripts/prune_train_vit.bash": ["run_vit.py", "--prune-step 2955", "--rewind init",
                                                "--self-pruning-ratio 0.3", "--per-device-train-batch-size 64"],
    "Finetuning/scripts/prune_train_llm.bash": ["run_bert.py", "--prune-step 2955", "--inter-pruning-ratio 0.3"],
    "Finetuning/scripts/slim_clm.bash": ["run_clm.py", "--model-name-or-path meta-llama/Llama-3.2-1B",
                                         "--block-size 512", "--self-slimming --inter-slimming"],
    "Finetuning/scripts/prune_train_clm.bash": ["run_clm.py", "--prune-step 2955", "--self-pruning-scope uniform",
                                                "--gqa-rule per-group --round-to 1"],
    "ViT_pretraining/scripts/slimming.sh": ["main.py", "--dataset cifar10"],
    "ViT_pretraining/scripts/prune_train.sh": ["main.py", "--prune-step 2955", "--dataset cifar10"],
}


@pytest.fixture(scope="module")
def study_slim_run(tmp_path_factory):
    return fake_slim_run(tmp_path_factory.mktemp("slim"), 14774)


@pytest.mark.usefixtures("fake_gpu")
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_scripts_default_to_the_study_and_take_overrides(script, tmp_path, study_slim_run):
    # DEVICE=cpu (conftest): no GPU check; DRY_RUN prints the command instead of running it.
    env = script_env(DRY_RUN=1, OUTPUT_DIR=tmp_path / "out", SLIM_DIR=study_slim_run)
    proc = subprocess.run(["bash", str(ROOT / script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    command = proc.stderr.strip().splitlines()[-1]
    assert command.startswith("+ ") and " launch --cpu --num_processes 1 " in command
    for expected in SCRIPTS[script]:
        assert expected in command, (expected, command)
    assert f"--output-dir {tmp_path / 'out'}" in command
    env.update(NUM_PROCESSES="3", GLOBAL_BATCH="24", MAX_STEPS="7", SEED="5", RANDOM_SEED="9", REWIND="none",
               TASK="glue", TRAIN_FILE="t.tsv", MIXED_PRECISION="bf16", REPORT_TO="tensorboard", CHECKPOINT_MINUTES="15")
    command = subprocess.run(["bash", str(ROOT / script)], capture_output=True, text=True, env=env,
                             timeout=60).stderr.strip().splitlines()[-1]
    assert "--multi_gpu --num_processes 3" in command and "--max-steps 7" in command and "--seed 5" in command
    accumulation = int(command.split("--gradient-accumulation-steps ")[1].split()[0])
    assert f"--per-device-train-batch-size {24 // 3 // accumulation} " in command
    assert "--mixed_precision bf16" in command and "--mixed-precision bf16" in command
    assert "--report-to tensorboard" in command and "--checkpoint-minutes 15" in command
    if "prune" in script:
        assert "--random-prune 9" in command and "--rewind none" in command
    else:  # EB-Train, its detector scaled to the run's own length
        env.update(EB_METHOD="slope")
        command = subprocess.run(["bash", str(ROOT / script)], capture_output=True, text=True, env=env,
                                 timeout=60).stderr.strip().splitlines()[-1]
        assert "--eb-method slope --eb-scale --self-pruning-ratio 0.3 --inter-pruning-ratio 0.3" in command
    if "llm" in script:
        assert "--task glue --train-file t.tsv" in command


# The study's data sets: ImageNet-1k's and CIFAR-10's training examples.
SCALE_PAIRS = {
    "vit": ("Finetuning/scripts/slim_vit.bash", "Finetuning/scripts/prune_train_vit.bash", 1_281_167, (1, 2, 8)),
    # GLOBAL_BATCH empty: the preset's batch (128), looked up when several processes share it
    "vit_pretraining": ("ViT_pretraining/scripts/slimming.sh", "ViT_pretraining/scripts/prune_train.sh", 50_000,
                        (1, 8)),
}


@pytest.mark.parametrize("pair", sorted(SCALE_PAIRS))
def test_global_batch_steps_and_prune_step_do_not_depend_on_the_processes(pair, tmp_path):
    slim_script, ticket_script, examples, counts = SCALE_PAIRS[pair]
    seen = set()
    for n in counts:
        slim = dry_run(slim_script, NUM_PROCESSES=n, OUTPUT_DIR=tmp_path / f"slim{n}")
        assert value(slim, "--num_processes") == str(n)
        preset = PRETRAIN_PRESETS["cifar"]  # what main.py fills in for a flag not given
        run = SimpleNamespace(
            per_device_train_batch_size=int(value(slim, "--per-device-train-batch-size")
                                            or preset["per_device_train_batch_size"]),
            gradient_accumulation_steps=int(value(slim, "--gradient-accumulation-steps")), max_steps=None,
            num_train_epochs=float(value(slim, "--num-train-epochs") or preset["num_train_epochs"]))
        steps = step_budget(run, examples, n)[2]  # the loop's own count of the run's optimizer steps
        global_batch = run.per_device_train_batch_size * n * run.gradient_accumulation_steps
        # the slimming run as it would have finished with n processes, then its ticket with as many
        slim_dir = fake_slim_run(tmp_path / f"slim{n}", steps)
        ticket = dry_run(ticket_script, NUM_PROCESSES=n, SLIM_DIR=slim_dir, OUTPUT_DIR=tmp_path / f"ticket{n}")
        prune_step = int(value(ticket, "--prune-step"))
        assert 1 <= prune_step <= steps  # a recorded step of that run (make_plan refuses any other)
        assert prune_step == round(0.2 * steps)
        for flag in ("--per-device-train-batch-size", "--gradient-accumulation-steps", "--num-train-epochs"):
            assert value(ticket, flag) == value(slim, flag)  # the same budget
        seen.add((global_batch, steps, prune_step))
    assert len(seen) == 1, seen  # one global batch, one length, one prune step, whatever the number of processes
    assert next(iter(seen))[0] == (256 if pair == "vit" else preset["per_device_train_batch_size"])


BAD_SETTINGS = [  # (environment, what the one line says)
    ({"NUM_PROCESSES": "8"}, "GLOBAL_BATCH=12 does not divide into NUM_PROCESSES=8 x GRAD_ACCUM=1 per-device batches"),
    ({"BATCH_SIZE": "12"}, "BATCH_SIZE=12: the scripts take GLOBAL_BATCH"),
    ({"NUM_PROCESSES": "two"}, "NUM_PROCESSES=two: expected a positive integer"),
    ({"NUM_MACHINES": "2", "NUM_PROCESSES": "2", "MAIN_PROCESS_IP": "10.0.0.1"},
     "MACHINE_RANK=: expected this machine"),
    ({"NUM_MACHINES": "2", "NUM_PROCESSES": "2", "MACHINE_RANK": "1"}, "NUM_MACHINES=2 needs MAIN_PROCESS_IP"),
    ({"NUM_MACHINES": "2", "NUM_PROCESSES": "3", "GLOBAL_BATCH": "3"},
     "NUM_PROCESSES=3 (processes in total) is not a multiple of NUM_MACHINES=2"),
    ({"DEVICE": "tpu"}, "DEVICE=tpu: expected auto, cpu or cuda"),
]


@pytest.mark.parametrize("settings,line", BAD_SETTINGS)
def test_bad_settings_are_one_line_and_start_nothing(settings, line, tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "Finetuning/scripts/slim_llm.bash")], capture_output=True, text=True,
                          timeout=60, env=script_env(OUTPUT_DIR=tmp_path / "out", ACCELERATE="false", **settings))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"slim_llm.bash: error: {line}") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_prune_step_needs_a_finished_slimming_run(tmp_path):
    unfinished = fake_slim_run(tmp_path / "slim", 50)
    (unfinished / "results.json").unlink()
    for settings, line in (({}, f"{unfinished / 'results.json'} not found or without its step: the slimming run has "
                                "not finished"),
                           ({"PRUNE_FRACTION": "1.5"}, "PRUNE_FRACTION=1.5: expected a fraction of training in [0, 1]")):
        if settings:
            fake_slim_run(tmp_path / "done", 50)
        slim = tmp_path / ("done" if settings else "slim")
        proc = subprocess.run(["bash", str(ROOT / "Finetuning/scripts/prune_train_vit.bash")], capture_output=True,
                              text=True, timeout=60, env=script_env(SLIM_DIR=slim, OUTPUT_DIR=tmp_path / "out",
                                                                    ACCELERATE="false", **settings))
        assert proc.returncode == 2
        assert proc.stderr.startswith(f"prune_train_vit.bash: error: {line}") and len(proc.stderr.splitlines()) == 1
    # a step between records (--record-every 2) is not one: the nearest recorded step is taken
    sparse = tmp_path / "sparse"
    fake_slim_run(sparse, 10)
    np.save(sparse / "records" / "steps.npy", np.arange(2, 21, 2))
    (sparse / "results.json").write_text(json.dumps({"kind": "slim", "step": 20}))
    command = dry_run("Finetuning/scripts/prune_train_vit.bash", SLIM_DIR=sparse, PRUNE_FRACTION="0.35",
                      OUTPUT_DIR=tmp_path / "t")
    assert value(command, "--prune-step") == "6"  # 0.35 x 20 = 7: records at 6 and 8, as near: the earlier


def test_several_machines(tmp_path):
    command = dry_run("Finetuning/scripts/slim_vit.bash", NUM_MACHINES=2, NUM_PROCESSES=4, MACHINE_RANK=1,
                      MAIN_PROCESS_IP="10.1.2.3", MAIN_PROCESS_PORT=29555, OUTPUT_DIR=tmp_path)
    words = " ".join(command)
    assert ("--multi_gpu --num_processes 4 --num_machines 2 --machine_rank 1 --main_process_ip 10.1.2.3 "
            "--main_process_port 29555") in words
    assert value(command, "--per-device-train-batch-size") == "16"  # 256 over 4 processes (in total) x 4


def fake_accelerate(tmp_path):
    """An `accelerate` that only says it was started (and with what)."""
    started = tmp_path / "started"
    exe = tmp_path / "accelerate"
    exe.write_text(f'#!/bin/sh\necho "$@" > {started}\n')
    exe.chmod(0o755)
    return exe, started


@pytest.mark.usefixtures("fake_gpu")
def test_a_cpu_torch_on_a_gpu_machine_stops_with_one_line(tmp_path):
    accelerate, started = fake_accelerate(tmp_path)
    python = ROOT / ".venv" / "bin" / "python"
    torch_version = torch.__version__
    for device in ("auto", "cuda"):
        env = script_env(DEVICE=device, PYTHON=python, ACCELERATE=accelerate, DATASET="digits",
                         OUTPUT_DIR=tmp_path / "out")
        proc = subprocess.run(["bash", str(ROOT / "ViT_pretraining/scripts/slimming.sh")], capture_output=True,
                              text=True, timeout=120, env=env)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        assert f"torch {torch_version} of {python} cannot use" in proc.stderr and "bash setup.sh --cuda" in proc.stderr
        if device == "auto":
            assert proc.stderr.startswith("slimming.sh: error: nvidia-smi lists 1 GPU(s)")
            assert "DEVICE=cpu" in proc.stderr
        assert not started.exists() and not (tmp_path / "out").exists()  # nothing started
    # DEVICE=cpu: go on, on the CPU
    proc = subprocess.run(["bash", str(ROOT / "ViT_pretraining/scripts/slimming.sh")], capture_output=True, text=True,
                          timeout=120, env=script_env(DEVICE="cpu", PYTHON=python, ACCELERATE=accelerate,
                                                      DATASET="digits", OUTPUT_DIR=tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert started.read_text().startswith("launch --cpu --num_processes 1 ")


def test_setup_installs_a_cuda_torch_with_cuda(tmp_path):
    """`setup.sh --cuda` asks pip for the pinned torch from TORCH_INDEX (a fake venv's python records the calls:
    nothing is downloaded)."""
    calls = tmp_path / "calls"
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "earlybird"):
        (venv / "bin" / name).write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
        (venv / "bin" / name).chmod(0o755)
    pin = next(line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("torch=="))
    proc = subprocess.run(["bash", str(ROOT / "setup.sh"), "--cuda"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "VENV": str(venv), "TORCH_INDEX": "https://example.invalid/whl/cu130"})
    assert proc.returncode == 0, proc.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].endswith(f"install --quiet --disable-pip-version-check --upgrade --index-url "
                             f"https://example.invalid/whl/cu130 {pin}")
    assert "torch.version.cuda" in lines[1]  # then checks that it is a CUDA build
    assert not any("--index-url" in line for line in lines[2:])  # the rest as without --cuda
    proc = subprocess.run(["bash", str(ROOT / "setup.sh"), "--gpu"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "expected nothing, --check, --revert or --cuda" in proc.stderr


@pytest.mark.cuda
def test_scripts_train_on_the_gpu_when_torch_can(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(ROOT / "ViT_pretraining/scripts/slimming.sh")], capture_output=True, text=True,
                          timeout=300, env=script_env(DATASET="digits", MAX_STEPS=4, WORKERS=0, OUTPUT_DIR=out,
                                                      EXTRA_ARGS="--disable-tqdm --checkpoint-every 0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " launch --num_processes 1 " in proc.stderr  # neither --cpu nor a refusal
    assert read_json(out / "results.json")["step"] == 4


def test_setup_script_delegates_to_the_root_setup():
    text = (ROOT / "ViT_pretraining/scripts/setup.sh").read_text()
    assert 'exec bash "$ROOT/setup.sh" "$@"' in text
