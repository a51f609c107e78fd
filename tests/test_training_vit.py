"""ViT fine-tuning end to end on a tiny model and an imagefolder made here: slim -> records -> plan ->
ticket (both rewinds, random baseline) -> reload; and bad input failing in one line before training."""

import json

import numpy as np
import pytest
import torch

from earlybird.plans import make_plan, save_plan
from earlybird.records import CoefficientRecorder, load_records
from test_training_support import load_script, make_imagefolder, make_tiny_vit, one_thread, read_json, read_jsonl

run_vit = load_script("Finetuning/run_vit.py", "run_vit")
STEPS = 12


pytestmark = pytest.mark.usefixtures("one_thread_only")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit")
    return {"root": root, "model": make_tiny_vit(root / "model"), "data": make_imagefolder(root / "images")}


def common(ws, out):
    return ["--model-name-or-path", str(ws["model"]), "--dataset", str(ws["data"]), "--output-dir", str(out),
            "--max-steps", str(STEPS), "--per-device-train-batch-size", "6", "--learning-rate", "3e-3",
            "--disable-tqdm", "--logging-steps", "4"]


@pytest.fixture(scope="module")
def slim_run(workspace):
    with one_thread():
        out = workspace["root"] / "slim"
        code = run_vit.main(common(workspace, out) + [
            "--self-slimming", "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2",
            "--save-steps", "6", "--eval-every", "6", "--record-chunk", "5"])
    assert code == 0
    return out


def test_slimming_run_writes_records_init_and_results(slim_run):
    records = load_records(slim_run / "records")
    assert records.steps.tolist() == list(range(1, STEPS + 1))
    assert records.msa.shape == (STEPS, 2, 4) and records.mlp.shape == (STEPS, 2, 37)
    assert not np.allclose(records.msa[-1], 1.0)  # the coefficients moved
    assert records.meta["model"]["layers"] == 2 and records.meta["model_type"] == "vit"
    assert records.meta["flags"] == {"self_slimming": True, "inter_slimming": True, "slim_before": False,
                                     "soft_by_one": False}
    for name in ("init", "snapshots/step-6", "final", "args.json", "results.json"):
        assert (slim_run / name).exists(), name
    lines = read_jsonl(slim_run / "metrics.jsonl")
    assert [l["step"] for l in lines if l["type"] == "train"] == [4, 8, 12]
    assert [l["step"] for l in lines if l["type"] == "eval"] == [6]
    results = read_json(slim_run / "results.json")
    assert results["split"] == "validation" and 0.0 <= results["accuracy"] <= 1.0
    assert read_json(slim_run / "args.json")["l1_self"] == 1e-2
    from transformers import ViTForImageClassification

    init = ViTForImageClassification.from_pretrained(slim_run / "init")
    assert all(torch.equal(p, torch.ones_like(p)) for n, p in init.named_parameters() if n.endswith("slimming_coef"))


def evaluate_reloaded(path, data):
    """Accuracy of a saved model on the validation images, outside the training code."""
    from transformers import ViTForImageClassification

    from earlybird.data import common as dcommon, images

    model, info = ViTForImageClassification.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    split = dcommon.load_dataset_any(str(data), builder="imagefolder")["validation"]
    transform = images.ImageTransform("eval", 16, (0.5,) * 3, (0.5,) * 3)
    pixels = torch.stack([transform(ex["image"]) for ex in split])
    with torch.no_grad():
        predictions = model.eval()(pixel_values=pixels).logits.argmax(-1)
    return model, float((predictions == torch.tensor(split["label"])).float().mean())


def test_ticket_from_a_plan_rewound_to_init(slim_run, workspace, tmp_path):
    plan = make_plan(load_records(slim_run / "records"), 6, 0.5, 0.3)
    save_plan(plan, tmp_path / "plan.json")
    out = tmp_path / "ticket"
    assert run_vit.main(common(workspace, out) + ["--prune-plan", str(tmp_path / "plan.json")]) == 0
    assert read_json(out / "plan.json") == plan
    results = read_json(out / "results.json")
    assert results["kept"] == {"heads": [2, 2], "intermediate": [26, 26]}
    assert not (out / "records").exists()  # tickets train as plain models
    model, accuracy = evaluate_reloaded(out / "final", workspace["data"])
    assert model.config.pruned_heads == {int(k): v for k, v in plan["pruned_heads"].items() if v}
    assert not model.config.self_slimming and not model.config.inter_slimming
    assert accuracy == pytest.approx(results["accuracy"])


def test_ticket_from_records_rewound_to_the_pruning_step_and_random_baseline(slim_run, workspace, tmp_path):
    argv = ["--records", str(slim_run / "records"), "--prune-step", "6", "--self-pruning-ratio", "0.25",
            "--inter-pruning-ratio", "0.5", "--inter-pruning-method", "global", "--rewind", "none"]
    assert run_vit.main(common(workspace, tmp_path / "none") + argv) == 0
    plan = read_json(tmp_path / "none" / "plan.json")
    assert plan["provenance"]["step"] == 6 and plan["provenance"]["inter_scope"] == "global"
    kept = read_json(tmp_path / "none" / "results.json")["kept"]
    assert kept["heads"] == [3, 3] and sum(kept["intermediate"]) == 74 - 37
    evaluate_reloaded(tmp_path / "none" / "final", workspace["data"])

    assert run_vit.main(common(workspace, tmp_path / "random") + argv[:6] + ["--random-prune", "7"]) == 0
    random_plan = read_json(tmp_path / "random" / "plan.json")
    counts = lambda p, key: [len(v) for _, v in sorted(p[key].items())]  # noqa: E731
    assert counts(random_plan, "pruned_heads") == [1, 1]
    assert random_plan["provenance"]["random_seed"] == 7


def bad_run(capsys, argv):
    capsys.readouterr()  # what the test's own setup printed
    code = run_vit.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("case", ["dataset", "column", "step", "ratio", "rewind", "plan", "records", "bert-records",
                                  "model"])
def test_bad_input_fails_in_one_line_before_training(case, slim_run, workspace, tmp_path, capsys):
    import datasets

    out = tmp_path / "out"
    argv = common(workspace, out)
    records = ["--records", str(slim_run / "records"), "--self-pruning-ratio", "0.5"]
    if case == "dataset":
        argv[argv.index("--dataset") + 1] = str(tmp_path / "no-such-data")
        expected = "no such local directory"
    elif case == "column":
        saved = tmp_path / "saved"
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"picture": [0], "label": [0]})}).save_to_disk(str(saved))
        argv[argv.index("--dataset") + 1] = str(saved)
        expected = "no image column"
    elif case == "step":
        argv += records + ["--prune-step", str(STEPS + 5)]
        expected = f"step {STEPS + 5} is not recorded"
    elif case == "ratio":
        argv += records[:2] + ["--prune-step", "6", "--inter-pruning-ratio", "1.0"]
        expected = "--inter-pruning-ratio"
    elif case == "rewind":
        argv += records + ["--prune-step", "5", "--rewind", "none"]
        expected = "--rewind none needs the weights at step 5"
    elif case == "plan":
        plan = make_plan(load_records(slim_run / "records"), 6, 0.5, 0.0)
        plan["shape"]["heads"] = 8
        plan["pruned_heads"] = {"0": [0, 7]}
        save_plan(plan, tmp_path / "plan.json")
        argv += ["--prune-plan", str(tmp_path / "plan.json")]
        expected = "8 heads"
    elif case == "records":  # records of a 3-layer model, weights of the 2-layer one
        other = tmp_path / "other" / "records"
        with CoefficientRecorder(other) as recorder:
            recorder.record(1, torch.rand(3, 4), torch.rand(3, 37))
        argv += ["--records", str(other), "--prune-step", "1", "--self-pruning-ratio", "0.5",
                 "--init-checkpoint", str(slim_run / "init")]
        expected = "different model"
    elif case == "bert-records":  # the same sizes, but recorded on a BERT
        other = tmp_path / "bert" / "records"
        with CoefficientRecorder(other, meta={"model_type": "bert"}) as recorder:
            recorder.record(1, torch.rand(2, 4), torch.rand(2, 37))
        argv += ["--records", str(other), "--prune-step", "1", "--self-pruning-ratio", "0.5",
                 "--init-checkpoint", str(slim_run / "init")]
        expected = "came from a 'bert' model"
    else:
        argv[argv.index("--model-name-or-path") + 1] = str(tmp_path / "missing-model")
        expected = "cannot load a model config"
    code, err = bad_run(capsys, argv)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("run_vit.py: error: ") and expected in err[0], err
    assert not out.exists()  # nothing written, nothing trained
