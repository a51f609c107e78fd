"""Hostile and wrong inputs, one table: each goes through the CLI or an entry point and must give one line
`<prog>: error: <what, where, what was expected>`, exit status 2, and leave every existing output byte-identical
(the entry-point cases even pass --overwrite-output-dir on a finished run: a late check would wipe it)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from earlybird import cli
from earlybird.plans import make_plan, save_plan
from earlybird.records import HEADER_BYTES, CoefficientRecorder, load_records
from test_reliability_support import digests
from test_training_support import load_script, make_sentiment_tsv, make_tiny_bert, one_thread

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
run_bert = load_script("Finetuning/run_bert.py", "run_bert")

# The digits preset's model (4 layers x 4 heads x 128 neurons, 8x8 images), a few steps.
SLIM = ["--max-steps", "6", "--per-device-train-batch-size", "32", "--disable-tqdm", "--self-slimming",
        "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2", "--checkpoint-every", "3"]
SMALL_VIT = ["--image-size", "8", "--patch-size", "2", "--num-layers", "4", "--hidden-size", "64", "--num-heads", "4",
             "--intermediate-size", "128", "--per-device-train-batch-size", "8"]


pytestmark = pytest.mark.usefixtures("one_thread_only")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A finished slimming run (`slim`: records steps 1-6, init/, checkpoints) and a copy of it (`victim`)."""
    root = tmp_path_factory.mktemp("hostile")
    with one_thread():
        assert pretrain.main(["--output-dir", str(root / "slim"), *SLIM]) == 0
    shutil.copytree(root / "slim", root / "victim")
    return root


# --------------------------------------------------------------------------- making bad inputs


def copy_records(ws, name):
    target = ws / "bad" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ws / "slim" / "records", target)
    return target


def poisoned_records(ws, value):
    target = copy_records(ws, f"poison-{value}")
    data = np.load(target / "mlp.npy")
    data[2, 1, 3] = value
    np.save(target / "mlp.npy", data)
    return target


def other_model_records(ws, layers, heads):
    target = ws / "bad" / f"records-{layers}x{heads}"
    if not target.exists():
        with CoefficientRecorder(target, meta={"model_type": "vit"}) as recorder:
            for step in range(1, 7):
                recorder.record(step, torch.rand(layers, heads), torch.rand(layers, 128))
    return target


def truncated_records(ws):
    target = copy_records(ws, "truncated")
    with open(target / "msa.npy", "r+b") as f:  # cut in the middle of row 4 (each row 4 x 4 float32)
        f.truncate(HEADER_BYTES + 3 * 16 * 4 + 20)
    return target


def run_with_truncated_records(ws):
    target = ws / "bad" / "run-truncated"
    if not target.exists():
        shutil.copytree(ws / "slim", target)
        shutil.rmtree(target / "checkpoints" / "step-6")  # so that the resume has steps left to do
        (target / "results.json").unlink()  # (a run with results.json has finished: --resume would leave it)
        with open(target / "records" / "msa.npy", "r+b") as f:
            f.truncate(HEADER_BYTES + 2 * 16 * 4 + 20)
    return target


def plan_file(ws, name, text):
    path = ws / "bad" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def good_plan(ws):
    return make_plan(load_records(ws / "slim" / "records"), 3, 0.25, 0.25)


def plan_with(ws, name, **changes):
    plan = good_plan(ws)
    plan.update(changes)
    return plan_file(ws, name, json.dumps(plan))


def duplicate_layer_plan(ws):
    text = json.dumps(good_plan(ws))
    # two entries for layer "0": plain json.load would silently keep the second one
    text = text.replace('"pruned_heads": {"0": [', '"pruned_heads": {"0": [1], "0": [', 1)
    assert text.count('"0": [') >= 2
    return plan_file(ws, "duplicate.json", text)


def image_dataset(ws, name, labels, names=None):
    """A save_to_disk image data set (8x8) with the given train labels; validation/test have labels 0..1."""
    import datasets
    from PIL import Image

    target = ws / "bad" / name
    if target.exists():
        return target
    label = datasets.ClassLabel(names=names) if names else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "label": label})

    def split(values):
        images = [Image.fromarray(np.full((8, 8, 3), 20 * (v % 10), np.uint8)) for v in values]
        return datasets.Dataset.from_dict({"image": images, "label": list(values)}, features=features)

    datasets.DatasetDict({"train": split(labels), "validation": split([0, 1] * 4),
                          "test": split([1, 0] * 4)}).save_to_disk(str(target))
    return target


def empty_imagefolder(ws):
    target = ws / "bad" / "empty-imagefolder"
    for label in ("cat", "dog"):
        (target / "train" / label).mkdir(parents=True, exist_ok=True)
    return target


def bert_with_a_small_vocabulary(ws):
    """A tiny BERT whose embeddings hold 10 tokens fewer than its tokenizer (a tokenizer from another model)."""
    from transformers import BertConfig, BertModel

    target = ws / "bad" / "bert-mismatch"
    if not target.exists():
        make_tiny_bert(target)
        config = BertConfig.from_pretrained(target)
        config.vocab_size -= 10
        torch.manual_seed(0)
        BertModel(config).save_pretrained(target)
    return target


# --------------------------------------------------------------------------- the table


def ticket(ws, *extra):
    return ["--output-dir", ws / "victim", "--overwrite-output-dir", "--max-steps", "2", "--disable-tqdm", *extra]


def ticket_from(ws, records, step="3", *extra):
    return ticket(ws, "--records", records, "--prune-step", step, "--self-pruning-ratio", "0.25", *extra)


def detect(records, *extra):
    return ["detect", records, "--ratio", "0.3", *extra]


CASES = {
    # id: (program, argv builder, expected piece of the message)
    "records with NaN (detect)": ("earlybird", lambda ws: detect(poisoned_records(ws, np.nan), "--method", "hamming"),
                                  "contains NaN or inf (first at row 2)"),
    "records with inf (ticket)": ("main.py", lambda ws: ticket_from(ws, poisoned_records(ws, np.inf)),
                                  "(mlp): contains NaN or inf (first at row 2); expected finite"),
    "records of a 3-layer model": ("main.py", lambda ws: ticket_from(ws, other_model_records(ws, 3, 4), "3",
                                                                     "--init-checkpoint", ws / "slim" / "init"),
                                   "was made for 3 layers but the model has 4"),
    "records with 6 heads per layer": ("main.py", lambda ws: ticket_from(ws, other_model_records(ws, 4, 6), "3",
                                                                         "--init-checkpoint", ws / "slim" / "init"),
                                       "was made for 6 heads but the model has 4"),
    "records truncated mid-array (detect)": ("earlybird", lambda ws: detect(truncated_records(ws), "--method", "hamming"),
                                             "truncated or corrupt .npy: header says 6 rows"),
    "records truncated mid-array (ticket)": ("main.py", lambda ws: ticket_from(ws, truncated_records(ws)),
                                             "truncated or corrupt .npy"),
    "plan index out of range": ("main.py", lambda ws: ticket(ws, "--prune-plan", plan_with(
        ws, "range.json", pruned_heads={"0": [1, 4]})), "'pruned_heads'['0'] has index 4 outside 0..3"),
    "plan layer out of range": ("main.py", lambda ws: ticket(ws, "--prune-plan", plan_with(
        ws, "layer.json", pruned_heads={"7": [1]})), "has layer key '7'; expected an integer in 0..3"),
    "plan with a duplicate layer": ("main.py", lambda ws: ticket(ws, "--prune-plan", duplicate_layer_plan(ws)),
                                    "duplicate key '0' in a JSON object; expected each key"),
    "negative ratio (CLI plan: its output is not created)": (
        "earlybird", lambda ws: ["plan", ws / "slim" / "records", "--step", "3", "--self-ratio", "-0.2",
                                 "--inter-ratio", "0", "-o", ws / "victim" / "plan.json"],
        "--self-ratio: pruning ratio must be in [0, 1), got -0.2"),
    "negative ratio": ("main.py", lambda ws: ticket(ws, "--records", ws / "slim" / "records", "--prune-step", "3",
                                                    "--self-pruning-ratio", "-0.1"), "--self-pruning-ratio"),
    "ratio of 1": ("main.py", lambda ws: ticket(ws, "--records", ws / "slim" / "records", "--prune-step", "3",
                                                "--inter-pruning-ratio", "1.0"), "--inter-pruning-ratio"),
    "ratio >= 1 (detect)": ("earlybird", lambda ws: ["detect", ws / "slim" / "records", "--ratio", "1.2", "--method",
                                                     "hamming"], "--ratio: pruning ratio must be in [0, 1), got 1.2"),
    "pruning step before the first record": ("main.py", lambda ws: ticket_from(ws, ws / "slim" / "records", "0"),
                                             "step 0 is not recorded"),
    "pruning step after the last record": ("main.py", lambda ws: ticket_from(ws, ws / "slim" / "records", "99"),
                                           "step 99 is not recorded"),
    "empty data set (save_to_disk)": ("main.py", lambda ws: ticket(ws, "--dataset", image_dataset(
        ws, "empty", [], ["a", "b"]), *SMALL_VIT), "the train split is empty"),
    "empty data set (imagefolder)": ("main.py", lambda ws: ticket(ws, "--dataset", empty_imagefolder(ws), *SMALL_VIT),
                                     "the directory holds no data files (an empty data set)"),
    "empty data set (TSV with a header only)": ("run_bert.py", lambda ws: [
        "--model-name-or-path", make_tiny_bert(ws / "bad" / "bert"), "--task", "glue", "--output-dir", ws / "victim",
        "--overwrite-output-dir", "--max-steps", "2", "--disable-tqdm", "--train-file",
        plan_file(ws, "header-only.tsv", "sentence\tlabel\n")], "header-only.tsv: no rows (an empty data set)"),
    "a single class": ("main.py", lambda ws: ticket(ws, "--dataset", image_dataset(ws, "one-class", [3] * 40,
                                                                                   [str(i) for i in range(10)]),
                                                    *SMALL_VIT), "the train split has a single class (label 3)"),
    "labels beyond the model's head": ("main.py", lambda ws: ticket_from(
        ws, ws / "slim" / "records", "3", "--dataset", image_dataset(ws, "twelve", list(range(12)) * 4), *SMALL_VIT),
        "twelve) has labels 0..11 but the model's classifier has 10 outputs (labels 0..9)"),
    "negative labels": ("main.py", lambda ws: ticket(ws, "--dataset", image_dataset(ws, "negative",
                                                                                    [0, 1, -1, 1] * 10), *SMALL_VIT),
                        "must hold class indices"),
    "tokenizer larger than the embeddings": ("run_bert.py", lambda ws: [
        "--model-name-or-path", bert_with_a_small_vocabulary(ws), "--task", "glue", "--output-dir", ws / "victim",
        "--overwrite-output-dir", "--max-steps", "2", "--disable-tqdm",
        "--train-file", make_sentiment_tsv(ws / "bad" / "tsv") / "train.tsv",
        "--validation-file", ws / "bad" / "tsv" / "dev.tsv"], "embeddings hold"),
    "stationarity window longer than the records": ("earlybird", lambda ws: detect(
        ws / "slim" / "records", "--method", "slope", "--window", "50", "--smooth", "2", "--every", "1"),
        "the slope detector can never test on"),
    "hamming FIFO longer than the records": ("earlybird", lambda ws: detect(
        ws / "slim" / "records", "--method", "hamming", "--cached", "20"), "needs cached=20 masks"),
    "EB-Train window longer than the run": ("main.py", lambda ws: [
        "--output-dir", ws / "victim", "--overwrite-output-dir", *SLIM, "--eb-method", "mk", "--eb-window", "40",
        "--eb-every", "2", "--self-pruning-ratio", "0.5"], "can never test on this run's 6 steps"),
    "--resume with another global batch": ("main.py", lambda ws: [
        "--output-dir", ws / "victim", "--resume", *SLIM, "--per-device-train-batch-size", "16"],
        "the checkpoint was made with per-device batch x processes x accumulation = [32, 1, 1], this run has [16, 1, 1]"),
    "--resume onto records cut mid-array": ("main.py", lambda ws: [
        "--output-dir", run_with_truncated_records(ws), "--resume", *SLIM], "truncated or corrupt .npy"),
    "ticket images of another size": ("main.py", lambda ws: ticket_from(ws, ws / "slim" / "records", "3",
                                                                        "--image-size", "16"),
                                      "the images are prepared at 16x16 but the model takes 8x8"),
}
PROGRAMS = {"earlybird": cli.main, "main.py": pretrain.main, "run_bert.py": run_bert.main}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, ws, capsys):
    program, build, expected = CASES[case]
    argv = [str(a) for a in build(ws)]
    before = {name: digests(ws / name) for name in ("slim", "victim", "bad")}
    capsys.readouterr()
    code = PROGRAMS[program](argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert {name: digests(ws / name) for name in ("slim", "victim", "bad")} == before  # byte for byte


def test_mixed_image_modes_and_sizes_are_converted_not_refused(tmp_path):
    """L, LA, P, 1, RGBA, CMYK (JPEG) and RGB images of different sizes in one imagefolder: the run works."""
    from PIL import Image

    from earlybird.data.images import ImageTransform

    rng = np.random.default_rng(0)
    modes = [("L", "png"), ("LA", "png"), ("P", "png"), ("1", "png"), ("RGBA", "png"), ("CMYK", "jpg"), ("RGB", "png")]
    made = []
    for split, count in (("train", 3), ("validation", 1)):
        for label in ("cat", "dog"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i, (mode, ext) in enumerate(modes * count):
                size = (int(rng.integers(5, 40)), int(rng.integers(5, 40)))
                array = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
                image = Image.fromarray(array).convert(mode)
                image.save(folder / f"{i}.{ext}")
                made.append((mode, image))
    for kind in ("eval", "cifar"):
        transform = ImageTransform(kind, 8, (0.5,) * 3, (0.5,) * 3, padding=1, randaug_ops=1)
        for mode, image in made:
            pixels = transform(image, np.random.default_rng(0))
            assert pixels.shape == (3, 8, 8) and torch.isfinite(pixels).all(), mode
    out = tmp_path / "run"
    code = pretrain.main(["--output-dir", str(out), "--dataset", str(tmp_path / "images"), "--image-size", "8",
                          "--patch-size", "4", "--num-layers", "1", "--hidden-size", "16", "--num-heads", "2",
                          "--intermediate-size", "16", "--per-device-train-batch-size", "6", "--max-steps", "3",
                          "--disable-tqdm"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["num_examples"] == 2 * len(modes) and 0.0 <= results["accuracy"] <= 1.0
