"""Through `accelerate launch` and the bash scripts: two CPU processes (gloo) with EB-Train pruning in place
under DDP, compared with one process at the same global batch; and the scripts' commands and overrides."""

import os
import subprocess

import numpy as np
import pytest

from earlybird.records import load_records
from test_training_support import ROOT, load_script, one_thread, read_json, read_jsonl

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
EB = "--eb-method hamming --eb-threshold 1.0 --eb-cached 3 --self-pruning-ratio 0.5 --disable-tqdm --logging-steps 2"


def script_env(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "ACCELERATE": str(ROOT / ".venv" / "bin" / "accelerate")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    two = tmp_path / "two"
    proc = subprocess.run(
        ["bash", str(ROOT / "ViT_pretraining/scripts/slimming.sh")], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env=script_env(DATASET="digits", NUM_PROCESSES=2, MAX_STEPS=10, BATCH_SIZE=16, WORKERS=0,
                                    OUTPUT_DIR=two, CHECKPOINT_EVERY=5, CHECKPOINT_MINUTES="1e-9", L1_SELF="1e-2",
                                    L1_INTER="1e-2", EXTRA_ARGS=EB))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--multi_gpu --num_processes 2" in proc.stderr  # N CPU processes via torchrun (see launch.bash)
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
    "Finetuning/scripts/prune_train_vit.bash": ["run_vit.py", "--prune-step 2955", "--rewind init",
                                                "--self-pruning-ratio 0.3"],
    "Finetuning/scripts/prune_train_llm.bash": ["run_bert.py", "--prune-step 2955", "--inter-pruning-ratio 0.3"],
    "Finetuning/scripts/slim_clm.bash": ["run_clm.py", "--model-name-or-path meta-llama/Llama-3.2-1B",
                                         "--block-size 512", "--self-slimming --inter-slimming"],
    "Finetuning/scripts/prune_train_clm.bash": ["run_clm.py", "--prune-step 200", "--self-pruning-scope uniform",
                                                "--gqa-rule per-group --round-to 1"],
    "ViT_pretraining/scripts/slimming.sh": ["main.py", "--dataset cifar10"],
    "ViT_pretraining/scripts/prune_train.sh": ["main.py", "--prune-step 15600", "--dataset cifar10"],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_scripts_default_to_the_study_and_take_overrides(script, tmp_path):
    # PYTHON=false: no GPU check (there is none); DRY_RUN prints the command instead of running it.
    env = script_env(DRY_RUN=1, PYTHON="false", OUTPUT_DIR=tmp_path / "out")
    proc = subprocess.run(["bash", str(ROOT / script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    command = proc.stderr.strip().splitlines()[-1]
    assert command.startswith("+ ") and " launch --cpu --num_processes 1 " in command
    for expected in SCRIPTS[script]:
        assert expected in command, (expected, command)
    assert f"--output-dir {tmp_path / 'out'}" in command
    env.update(NUM_PROCESSES="3", MAX_STEPS="7", SEED="5", RANDOM_SEED="9", REWIND="none", TASK="glue",
               TRAIN_FILE="t.tsv", MIXED_PRECISION="bf16", REPORT_TO="tensorboard", CHECKPOINT_MINUTES="15")
    command = subprocess.run(["bash", str(ROOT / script)], capture_output=True, text=True, env=env,
                             timeout=60).stderr.strip().splitlines()[-1]
    assert "--multi_gpu --num_processes 3" in command and "--max-steps 7" in command and "--seed 5" in command
    assert "--mixed_precision bf16" in command and "--mixed-precision bf16" in command
    assert "--report-to tensorboard" in command and "--checkpoint-minutes 15" in command
    if "prune" in script:
        assert "--random-prune 9" in command and "--rewind none" in command
    if "llm" in script:
        assert "--task glue --train-file t.tsv" in command


def test_setup_script_delegates_to_the_root_setup():
    text = (ROOT / "ViT_pretraining/scripts/setup.sh").read_text()
    assert 'exec bash "$ROOT/setup.sh" "$@"' in text
