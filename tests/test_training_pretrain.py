"""The small ViT from scratch on the embedded digits: a short run, EB-Train pruning mid-run, and resuming
after an interrupted run giving bitwise the same records as an uninterrupted one (CPU, same seed)."""

import numpy as np
import pytest
import torch

from earlybird.records import load_records
from test_training_support import load_script, read_json, read_jsonl

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
# Dropout on, so resuming must restore the RNG exactly.
BASE = ["--disable-tqdm", "--logging-steps", "5", "--per-device-train-batch-size", "32", "--dropout", "0.1"]
SLIM = ["--self-slimming", "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2"]


pytestmark = pytest.mark.usefixtures("one_thread_only")


def test_digits_run_learns(tmp_path):
    assert pretrain.main(["--output-dir", str(tmp_path), "--max-steps", "60", "--learning-rate", "3e-3",
                          "--eval-every", "30", *BASE]) == 0
    results = read_json(tmp_path / "results.json")
    assert results["split"] == "test" and results["num_examples"] == 300 and results["dataset"] == "digits"
    assert results["model"] == {"model_type": "vit", "layers": 4, "heads": 4, "intermediate": 128}
    losses = [l["loss"] for l in read_jsonl(tmp_path / "metrics.jsonl") if l["type"] == "train"]
    assert losses[-1] < losses[0] - 0.1  # (a ViT plateaus first; the default 360 steps reach ~93%)
    assert results["accuracy"] > 0.15  # chance is 0.1
    assert not (tmp_path / "records").exists() and not (tmp_path / "init").exists()  # no slimming, no records


def test_ebtrain_draws_and_prunes_in_place(tmp_path):
    # hamming with the loosest threshold draws as soon as its FIFO of 3 masks is full (step 3)
    argv = ["--output-dir", str(tmp_path), "--max-steps", "20", *BASE, *SLIM, "--eb-method", "hamming",
            "--eb-threshold", "1.0", "--eb-cached", "3", "--self-pruning-ratio", "0.5", "--inter-pruning-ratio", "0.25"]
    assert pretrain.main(argv) == 0
    summary = read_json(tmp_path / "ebtrain.json")
    assert summary["drawn"] and summary["draw_step"] == 3
    assert summary["shape_before"] == {"heads": [4] * 4, "intermediate": [128] * 4}
    assert summary["shape_after"] == {"heads": [2] * 4, "intermediate": [96] * 4}
    flops = summary["flops"]
    assert flops["before_draw"] > 0 and flops["after_draw"] > 0
    # after the draw each step costs less than before it
    assert flops["after_draw"] / 17 < flops["before_draw"] / 3
    assert flops["total"] < flops["dense_equivalent"]
    assert summary["wall_s"]["before_draw"] > 0 and summary["wall_s"]["after_draw"] > 0
    records = load_records(tmp_path / "records")
    assert records.steps.tolist() == [1, 2, 3]  # the coefficients are folded away at the draw
    plan = read_json(tmp_path / "plan.json")
    assert plan["provenance"]["step"] == 3 and plan["provenance"]["ebtrain"]["method"] == "hamming"
    draws = [l for l in read_jsonl(tmp_path / "metrics.jsonl") if l["type"] == "draw"]
    assert len(draws) == 1 and draws[0]["step"] == 3
    from transformers import ViTForImageClassification

    model, info = ViTForImageClassification.from_pretrained(tmp_path / "final", output_loading_info=True)
    assert not info["missing_keys"] and not model.config.self_slimming
    assert read_json(tmp_path / "results.json")["kept"] == summary["shape_after"]


def test_stationarity_detector_draws_on_its_check_clock(tmp_path):
    argv = ["--output-dir", str(tmp_path), "--max-steps", "30", *BASE, "--self-slimming", "--l1-self", "1e-2",
            "--eb-method", "slope", "--eb-smooth", "3", "--eb-window", "10", "--eb-every", "5", "--eb-alpha", "0.01",
            "--self-pruning-ratio", "0.5"]
    assert pretrain.main(argv) == 0
    summary = read_json(tmp_path / "ebtrain.json")
    assert summary["drawn"] and (summary["draw_step"] + 1) % 5 == 0 and summary["draw_step"] >= 10
    assert summary["shape_after"]["heads"] == [2] * 4
    trace = summary["detectors"]["msa"]["trace"]
    assert trace and all((entry["step"] + 1) % 5 == 0 for entry in trace)


def records_of(path):
    r = load_records(path / "records")
    return r.steps.copy(), np.array(r.msa), np.array(r.mlp)


@pytest.mark.parametrize("crash_at", [13, 17])
def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path, crash_at):
    # checkpoints every 6 steps, records written every 4: crashing at 13 loses buffered row 13; crashing at
    # 17 leaves rows 13-16 on disk beyond the step-12 checkpoint. Both must resume without gaps or duplicates.
    # (logging every 5 and checkpoints every 6: the loss logged after a resume spans the checkpoint)
    argv = [*BASE, *SLIM, "--max-steps", "24", "--checkpoint-every", "6", "--record-chunk", "4"]
    assert pretrain.main(["--output-dir", str(tmp_path / "whole"), *argv]) == 0
    cut = tmp_path / "cut"
    assert pretrain.main(["--output-dir", str(cut), *argv, "--debug-crash-at-step", str(crash_at)]) == 3
    assert not (cut / "results.json").exists()
    assert pretrain.main(["--output-dir", str(cut), *argv, "--resume"]) == 0
    whole_steps, whole_msa, whole_mlp = records_of(tmp_path / "whole")
    cut_steps, cut_msa, cut_mlp = records_of(cut)
    assert whole_steps.tolist() == cut_steps.tolist() == list(range(1, 25))
    assert np.array_equal(whole_msa, cut_msa) and np.array_equal(whole_mlp, cut_mlp)
    losses = lambda p: [(l["step"], l["loss"]) for l in read_jsonl(p / "metrics.jsonl") if l["type"] == "train"]  # noqa: E731
    assert losses(tmp_path / "whole") == losses(cut)
    assert read_json(tmp_path / "whole" / "results.json")["accuracy"] == read_json(cut / "results.json")["accuracy"]
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["step-18", "step-24"]


def test_ebtrain_resumes_before_and_after_the_draw(tmp_path):
    argv = [*BASE, "--self-slimming", "--l1-self", "1e-2", "--max-steps", "24", "--checkpoint-every", "4",
            "--eb-method", "hamming", "--eb-threshold", "0.3", "--eb-cached", "3", "--self-pruning-ratio", "0.5"]
    assert pretrain.main(["--output-dir", str(tmp_path / "whole"), *argv]) == 0
    whole = read_json(tmp_path / "whole" / "ebtrain.json")
    assert whole["drawn"]
    for crash_at in (whole["draw_step"] - 1, whole["draw_step"] + 5):
        if crash_at < 4:
            continue
        cut = tmp_path / f"cut{crash_at}"
        assert pretrain.main(["--output-dir", str(cut), *argv, "--debug-crash-at-step", str(crash_at)]) == 3
        assert pretrain.main(["--output-dir", str(cut), *argv, "--resume"]) == 0
        again = read_json(cut / "ebtrain.json")
        assert again["draw_step"] == whole["draw_step"] and again["shape_after"] == whole["shape_after"]
        assert read_json(cut / "results.json")["accuracy"] == read_json(tmp_path / "whole" / "results.json")["accuracy"]


def test_bf16_mixed_precision_runs(tmp_path):
    assert pretrain.main(["--output-dir", str(tmp_path), "--max-steps", "4", *BASE, *SLIM,
                          "--mixed-precision", "bf16"]) == 0
    assert load_records(tmp_path / "records").msa.dtype == np.float32


def test_pretrain_bad_input(tmp_path, capsys):
    assert pretrain.main(["--output-dir", str(tmp_path), "--hidden-size", "30", "--num-heads", "4"]) == 2
    assert capsys.readouterr().err.strip() == "main.py: error: --hidden-size 30 is not a multiple of --num-heads 4"
    assert pretrain.main(["--output-dir", str(tmp_path), "--dataset", str(tmp_path / "none")]) == 2
    assert "no such local directory" in capsys.readouterr().err


def test_gradient_accumulation_is_the_same_global_batch(tmp_path):
    common = ["--max-steps", "6", "--disable-tqdm", *SLIM]  # no dropout: the two runs see the same examples
    assert pretrain.main(["--output-dir", str(tmp_path / "a"), "--per-device-train-batch-size", "32", *common]) == 0
    assert pretrain.main(["--output-dir", str(tmp_path / "b"), "--per-device-train-batch-size", "16",
                          "--gradient-accumulation-steps", "2", *common]) == 0
    a, b = load_records(tmp_path / "a" / "records"), load_records(tmp_path / "b" / "records")
    np.testing.assert_allclose(a.msa, b.msa, atol=1e-5)
    np.testing.assert_allclose(a.mlp, b.mlp, atol=1e-5)


def test_ebtrain_in_bf16(tmp_path):
    assert pretrain.main(["--output-dir", str(tmp_path), "--max-steps", "8", *BASE, *SLIM, "--mixed-precision", "bf16",
                          "--eb-method", "hamming", "--eb-threshold", "1.0", "--eb-cached", "2",
                          "--self-pruning-ratio", "0.5"]) == 0
    assert read_json(tmp_path / "ebtrain.json")["draw_step"] == 2
