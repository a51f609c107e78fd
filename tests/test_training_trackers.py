"""--report-to: what TensorBoard (read back with its own EventAccumulator) and W&B (offline, where installed) get is
what metrics.jsonl and the records say -- the loss, the L1 term (= the penalty of the recorded coefficients), the
learning rate, evaluations, the draw, and per recorded step the coefficient summaries and the watched masks' Hamming
distances and nuclear norms -- at the same steps; a resumed run's trackers end as the uninterrupted run's do."""

import json
import struct
import time

import numpy as np
import pytest

from earlybird.masks import compute_mask
from earlybird.records import CoefficientRecorder, load_records
from earlybird.training import trackers
from test_training_support import load_script, read_jsonl

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
BASE = ["--disable-tqdm", "--per-device-train-batch-size", "32", "--dropout", "0.1"]
L1 = 1e-2
SLIM = ["--self-slimming", "--inter-slimming", "--l1-self", str(L1), "--l1-inter", str(L1)]
TIMINGS = ("elapsed", "train_wall_s")  # wall-clock numbers: equal to metrics.jsonl, but not across two runs

pytestmark = pytest.mark.usefixtures("one_thread_only")


def tensorboard_scalars(run) -> dict:
    """{tag: [(step, value), ...]} as TensorBoard itself reads the run's event files (purges included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [directory] = [p for p in (run / "tracking").iterdir() if p.is_dir() and p.name != "wandb"]
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected_values(run, ratios: dict) -> dict:
    """{tag: {step: value}} computed here, independently, from metrics.jsonl and the records on disk."""
    expected = {}

    def put(tag, step, value):
        expected.setdefault(tag, {})[int(step)] = float(value)

    for line in read_jsonl(run / "metrics.jsonl"):
        prefix = line["type"] + (f"/{line['split']}" if "split" in line else "")
        for key, value in line.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                put(f"{prefix}/{key}", line["step"], value)
    records = load_records(run / "records")
    for block in ("msa", "mlp"):
        coefs = np.asarray(getattr(records, block), dtype=np.float64)
        previous = None
        for step, row in zip(records.steps, coefs):
            put(f"coefficients/{block}/mean", step, row.mean())
            put(f"coefficients/{block}/min", step, row.min())
            put(f"coefficients/{block}/max", step, row.max())
            put(f"coefficients/{block}/below_0.01", step, (np.abs(row) < 0.01).mean())
            mask = compute_mask(row, ratios[block])
            put(f"masks/{block}/nuclear_norm", step, np.linalg.norm(mask.astype(np.float64), "nuc"))
            if previous is not None:
                put(f"masks/{block}/hamming", step, np.mean(mask != previous))
            previous = mask
    return expected


def assert_logged(scalars: dict, expected: dict):
    assert set(scalars) == set(expected)
    for tag, values in expected.items():
        got = dict(scalars[tag])
        assert sorted(got) == sorted(values), tag
        for step, value in values.items():
            assert got[step] == pytest.approx(value, rel=1e-6, abs=1e-7), (tag, step)


def test_tensorboard_gets_the_metrics_and_the_records(tmp_path):
    run = tmp_path / "run"
    # chunks of 5 rows, so the Hamming distance crosses chunk boundaries; logging every step, so the L1 term of
    # each step can be checked against the coefficients recorded at the step before
    argv = ["--output-dir", str(run), "--max-steps", "12", *BASE, *SLIM, "--logging-steps", "1", "--record-chunk", "5",
            "--eval-every", "6", "--self-pruning-ratio", "0.5", "--report-to", "tensorboard"]
    assert pretrain.main(argv) == 0
    scalars = tensorboard_scalars(run)
    # msa: the configured --self-pruning-ratio; mlp: no ratio configured, so the default 0.3
    assert_logged(scalars, expected_values(run, {"msa": 0.5, "mlp": 0.3}))
    assert {"train/loss", "train/l1_penalty", "train/learning_rate", "eval/validation/accuracy",
            "final/test/accuracy", "masks/msa/hamming", "masks/mlp/nuclear_norm"} <= set(scalars)

    # The L1 term logged is the penalty of the coefficients the step's forward pass used: those recorded at the step
    # before (all 1 at step 0), so the task loss and the L1 term are logged apart and each is right.
    records = load_records(run / "records")
    ones = [np.ones_like(records.msa[0]), np.ones_like(records.mlp[0])]
    for line in read_jsonl(run / "metrics.jsonl"):
        if line["type"] == "train":
            row = line["step"] - 2
            msa, mlp = (ones if row < 0 else [records.msa[row], records.mlp[row]])
            penalty = L1 * (np.abs(msa).sum() + np.abs(mlp).sum())
            assert line["l1_penalty"] == pytest.approx(penalty, rel=1e-5)
            assert line["loss"] < line["l1_penalty"]  # (the task loss alone: ~2.3 against a penalty of ~5.3)


def test_a_resumed_run_logs_what_the_uninterrupted_one_logs(tmp_path):
    # killed at 17: the checkpoint is at 12, rows 13-16 were flushed (chunks of 4) and are kept by the resume, the
    # lines and events logged after step 12 are redone
    argv = [*BASE, *SLIM, "--max-steps", "24", "--checkpoint-every", "6", "--record-chunk", "4", "--logging-steps", "5",
            "--report-to", "tensorboard"]
    assert pretrain.main(["--output-dir", str(tmp_path / "whole"), *argv]) == 0
    cut = tmp_path / "cut"
    assert pretrain.main(["--output-dir", str(cut), *argv, "--debug-crash-at-step", "17"]) == 3
    assert pretrain.main(["--output-dir", str(cut), *argv, "--resume"]) == 0
    whole, resumed = tensorboard_scalars(tmp_path / "whole"), tensorboard_scalars(cut)
    assert set(whole) == set(resumed)
    for tag in whole:
        if tag.rsplit("/", 1)[-1] not in TIMINGS:
            assert resumed[tag] == whole[tag], tag  # same steps, no duplicates, same values
    assert_logged(resumed, expected_values(cut, {"msa": 0.3, "mlp": 0.3}))


def test_the_draw_reaches_the_trackers(tmp_path):
    argv = ["--output-dir", str(tmp_path), "--max-steps", "6", *BASE, *SLIM, "--eb-method", "hamming",
            "--eb-threshold", "1.0", "--eb-cached", "3", "--self-pruning-ratio", "0.5", "--report-to", "tensorboard"]
    assert pretrain.main(argv) == 0
    scalars = tensorboard_scalars(tmp_path)
    assert scalars["draw/pruned_heads"] == [(3, 8.0)]
    # the coefficients are folded away at the draw: the records, and their summaries, end there
    assert [step for step, _ in scalars["masks/msa/nuclear_norm"]] == [1, 2, 3]


def test_no_trackers_by_default_and_a_missing_one_is_refused(tmp_path, monkeypatch, capsys):
    assert pretrain.main(["--output-dir", str(tmp_path / "plain"), "--max-steps", "2", *BASE]) == 0
    assert not (tmp_path / "plain" / "tracking").exists()
    monkeypatch.setattr(trackers, "installed_trackers", lambda: ())  # as on a machine without tensorboard
    capsys.readouterr()
    for report_to, why in (("tensorboard", "the tensorboard package is not installed"),
                           ("all", "neither tensorboard nor wandb is installed")):
        assert pretrain.main(["--output-dir", str(tmp_path / "none"), "--max-steps", "2", *BASE,
                              "--report-to", report_to]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"main.py: error: --report-to {report_to}: {why}"), line
    assert not (tmp_path / "none").exists()


def test_the_recorder_hands_each_flushed_chunk_to_its_listener(tmp_path):
    calls = []
    def listener(steps, blocks):  # (the arrays are valid during the call: keep copies)
        calls.append((steps, {block: array.copy() for block, array in blocks.items()}))

    with CoefficientRecorder(tmp_path, chunk=4, listener=listener) as rec:
        for step in range(1, 11):
            rec.record(step, np.full((2, 3), step, np.float32), np.full((2, 5), -step, np.float32))
            # nothing reaches the listener between flushes: it gets what each flush moved to the host
            assert sum(len(steps) for steps, _ in calls) == 4 * (step // 4)
    assert [steps.tolist() for steps, _ in calls] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    records = load_records(tmp_path)
    np.testing.assert_array_equal(np.concatenate([b["msa"] for _, b in calls]), records.msa)
    np.testing.assert_array_equal(np.concatenate([b["mlp"] for _, b in calls]), records.mlp)


# --------------------------------------------------------------------------- W&B (offline), where installed


def wandb_records(path) -> list:
    """The protobuf `Record`s of an offline W&B run file. wandb 0.31 ships no reader for it: the file is a LevelDB-style
    log (a 7-byte file header, 32 KiB blocks of records with a 7-byte header: crc, length, type full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_history(run) -> list[dict]:
    """The history rows of the run's offline W&B file, once W&B's service has written all of it (its `exit` record:
    run.finish() may return before the separate wandb-core process has)."""
    [path] = (run / "tracking" / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 120
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path)):
        assert time.monotonic() < deadline, f"{path} has no exit record"
        time.sleep(0.5)
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in wandb_records(path) if record.WhichOneof("record_type") == "history"]


def test_wandb_offline_gets_the_same_values(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    argv = ["--output-dir", str(run), "--max-steps", "8", *BASE, *SLIM, "--logging-steps", "2", "--record-chunk", "3",
            "--report-to", "wandb"]
    assert pretrain.main(argv) == 0
    logged = {}
    for row in wandb_history(run):
        step = row.pop(trackers.WANDB_STEP)
        for tag, value in row.items():
            if not tag.startswith("_"):  # W&B's own (_step, _runtime, _timestamp)
                logged.setdefault(tag, {})[step] = value
    expected = expected_values(run, {"msa": 0.3, "mlp": 0.3})
    assert set(logged) == set(expected)
    for tag, values in expected.items():
        assert logged[tag] == pytest.approx(values, rel=1e-6, abs=1e-7), tag
