"""An honest --resume and crash-safe defaults: a default run checkpoints by minutes (and a run killed after one resumes
to the uninterrupted run's records, bitwise); a resume that would change the run (its budget, schedule, optimiser,
data, model, slimming, ticket or EB-Train flags) is refused in one line naming each flag and both values, touching
nothing; flags about how the run is watched and saved may change; a finished run is left as it is."""

import itertools

import numpy as np
import pytest

from earlybird.records import load_records
from earlybird.training import loop
from earlybird.training.resume import changed_flags
from test_reliability_support import digests
from test_training_support import load_script, one_thread, read_json, read_jsonl

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
# Dropout on, so resuming must restore the RNG exactly; a cosine schedule, as the digits preset has.
BASE = ["--disable-tqdm", "--logging-steps", "4", "--per-device-train-batch-size", "32", "--dropout", "0.1",
        "--max-steps", "12"]
SLIM = ["--self-slimming", "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2", "--record-chunk", "5"]
RUN = [*BASE, *SLIM, "--checkpoint-every", "3"]

pytestmark = pytest.mark.usefixtures("one_thread_only")


def records_of(run):
    records = load_records(run / "records")
    return records.steps.tolist(), np.array(records.msa), np.array(records.mlp)


def assert_same_records(a, b):
    (steps_a, msa_a, mlp_a), (steps_b, msa_b, mlp_b) = records_of(a), records_of(b)
    assert steps_a == steps_b and np.array_equal(msa_a, msa_b) and np.array_equal(mlp_a, mlp_b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`whole`: the uninterrupted run; `cut`: the same run killed after step 8 (newest checkpoint: step 6)."""
    root = tmp_path_factory.mktemp("resume")
    with one_thread():
        assert pretrain.main(["--output-dir", str(root / "whole"), *RUN]) == 0
        assert pretrain.main(["--output-dir", str(root / "cut"), *RUN, "--debug-crash-at-step", "8"]) == 3
    return root


# --------------------------------------------------------------------------- refused: flags that change the run

REFUSED = {  # flag: (another value, how the line shows the change: the run's args.json value -> this one)
    "--max-steps": ("24", "12 -> 24"),  # the restored cosine schedule would run past its end and climb back
    "--num-train-epochs": ("40", "20 -> 40.0"),  # (the digits preset's; --max-steps overrides it, yet it is the run's)
    "--learning-rate": ("0.01", "0.001 -> 0.01"),  # the optimizer's restored state would silently keep the old one
    "--lr-scheduler": ("linear", '"cosine" -> "linear"'),
    "--warmup-ratio": ("0.5", "0.025 -> 0.5"),
    "--weight-decay": ("0.1", "5e-05 -> 0.1"),
    "--seed": ("7", "42 -> 7"),  # the data order is a function of the seed
    "--max-train-samples": ("600", "null -> 600"),
    "--mixed-precision": ("bf16", '"no" -> "bf16"'),
    "--l1-self": ("0.5", "0.01 -> 0.5"),
    "--record-every": ("2", "1 -> 2"),
    "--self-pruning-ratio": ("0.5", "0.0 -> 0.5"),
    "--dropout": ("0.2", "0.1 -> 0.2"),  # an entry point's own flag
}


@pytest.mark.parametrize("flag", list(REFUSED))
def test_a_resume_that_would_change_the_run_is_refused_and_touches_nothing(runs, flag, capsys):
    other, change = REFUSED[flag]
    before = digests(runs / "cut")
    capsys.readouterr()
    assert pretrain.main(["--output-dir", str(runs / "cut"), *RUN, "--resume", flag, other]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"main.py: error: --resume: {flag} {change} (the run's args.json -> this command): "), line
    assert digests(runs / "cut") == before  # byte for byte: args.json is not rewritten, nothing is trained


def test_every_changed_flag_is_named_and_a_detector_parameter_given_once_counts(capsys, runs):
    capsys.readouterr()
    assert pretrain.main(["--output-dir", str(runs / "cut"), *RUN, "--resume", "--max-steps", "40",
                          "--lr-scheduler", "linear"]) == 2
    line = capsys.readouterr().err
    assert '--max-steps 12 -> 40, --lr-scheduler "cosine" -> "linear"' in line
    # --eb-<parameter> flags leave no attribute when not given: given on one side only is a change
    assert changed_flags({"eb_method": "slope", "eb_window": 40}, {"eb_method": "slope"}) == [
        "--eb-window 40 -> (not given)"]
    assert changed_flags({"eb_method": "slope"}, {"eb_method": "slope", "eb_window": 40}) == [
        "--eb-window (not given) -> 40"]
    # a flag of another version of the program (absent from the run's args.json) is not compared
    assert changed_flags({"max_steps": 12}, {"max_steps": 12, "some_new_flag": 1}) == []


def test_flags_about_watching_and_saving_may_change(runs, tmp_path):
    cut = tmp_path / "cut"
    import shutil

    shutil.copytree(runs / "cut", cut)
    changed = ["--logging-steps", "2", "--checkpoint-every", "4", "--keep-checkpoints", "3", "--record-chunk", "2",
               "--eval-every", "5", "--report-to", "tensorboard"]
    assert pretrain.main(["--output-dir", str(cut), *RUN, *changed, "--resume"]) == 0
    assert_same_records(runs / "whole", cut)
    assert [(l["step"], l["loss"]) for l in read_jsonl(cut / "metrics.jsonl") if l["type"] == "train"][:2] == [
        (l["step"], l["loss"]) for l in read_jsonl(runs / "whole" / "metrics.jsonl") if l["type"] == "train"][:2]


# --------------------------------------------------------------------------- a finished run


@pytest.mark.parametrize("checkpoints", ["at the last step", "none"])
def test_resuming_a_finished_run_leaves_it_as_it_is(tmp_path, checkpoints, capsys):
    run = tmp_path / "run"
    argv = [*BASE, *SLIM, "--checkpoint-every", "6" if checkpoints == "at the last step" else "0"]
    assert pretrain.main(["--output-dir", str(run), *argv]) == 0
    before = digests(run)
    capsys.readouterr()
    assert pretrain.main(["--output-dir", str(run), *argv, "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"main.py: {run} finished at step 12 (results.json exists): nothing to resume" in out
    assert digests(run) == before
    assert [line["type"] for line in read_jsonl(run / "metrics.jsonl")].count("final") == 1
    # and a finished run resumed with another budget is refused like any other run, naming the flag
    assert pretrain.main(["--output-dir", str(run), *argv, "--resume", "--max-steps", "24"]) == 2
    assert "--max-steps 12 -> 24" in capsys.readouterr().err
    assert digests(run) == before


# --------------------------------------------------------------------------- checkpoints by default


def test_a_default_run_checkpoints_by_minutes_and_resumes_exactly(tmp_path, monkeypatch):
    argv = [*BASE, *SLIM]  # no --checkpoint-every / --checkpoint-minutes
    assert pretrain.main(["--output-dir", str(tmp_path / "quick"), *argv]) == 0
    assert not (tmp_path / "quick" / "checkpoints").exists()  # a 12-step run is done long before 30 minutes

    # Each read of the clock now says 31 minutes have passed: a checkpoint is due at every logging step (4, 8; the
    # last step, 12, ends the run instead).
    clock = itertools.count(step=31 * 60)
    monkeypatch.setattr(loop, "wall_clock", lambda: next(clock))
    cut = tmp_path / "cut"
    assert pretrain.main(["--output-dir", str(cut), *argv, "--debug-crash-at-step", "10"]) == 3
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["step-4", "step-8"]
    assert pretrain.main(["--output-dir", str(cut), *argv, "--resume"]) == 0
    assert pretrain.main(["--output-dir", str(tmp_path / "whole"), *argv]) == 0
    assert_same_records(tmp_path / "whole", cut)

    for flags, expected in ((["--checkpoint-every", "0"], []),  # still turns checkpoints off
                            (["--checkpoint-minutes", "0"], []),
                            (["--checkpoint-every", "5"], ["step-10", "step-5"]),  # by steps only
                            (["--checkpoint-every", "5", "--checkpoint-minutes", "30"], ["step-10", "step-8"])):
        out = tmp_path / "-".join(flags)
        assert pretrain.main(["--output-dir", str(out), *argv, *flags]) == 0
        found = sorted(p.name for p in (out / "checkpoints").iterdir()) if (out / "checkpoints").exists() else []
        assert found == expected, flags


# --------------------------------------------------------------------------- EB-Train's result survives a resume


def test_ebtrain_json_of_a_run_resumed_after_the_draw_is_the_uninterrupted_runs(tmp_path):
    """The detector's trace is part of the run's result: a checkpoint after the draw carries it (a resumed run's
    detector has not seen the steps before the checkpoint)."""
    argv = [*BASE, "--self-slimming", "--l1-self", "1e-2", "--checkpoint-every", "2",
            "--eb-method", "hamming", "--eb-threshold", "0.3", "--eb-cached", "3", "--self-pruning-ratio", "0.5"]
    assert pretrain.main(["--output-dir", str(tmp_path / "whole"), *argv]) == 0
    whole = read_json(tmp_path / "whole" / "ebtrain.json")
    assert whole["drawn"] and whole["draw_step"] < 10 and whole["detectors"]["msa"]["trace"]
    cut = tmp_path / "cut"
    assert pretrain.main(["--output-dir", str(cut), *argv, "--debug-crash-at-step", "11"]) == 3
    assert read_json(cut / "checkpoints" / "step-10" / "state.json")["draw"]["step"] == whole["draw_step"]
    assert pretrain.main(["--output-dir", str(cut), *argv, "--resume"]) == 0
    again = read_json(cut / "ebtrain.json")
    assert {k: v for k, v in again.items() if k != "wall_s"} == {k: v for k, v in whole.items() if k != "wall_s"}


# --------------------------------------------------------------------------- one command for every submission


def test_a_bare_resume_continues_the_run_as_it_was(runs, tmp_path, capsys):
    """`--output-dir RUN --resume` alone: the run's args.json gives every flag (it was refused with 11 "changed"
    flags), and the run ends as the uninterrupted one; a flag given is still compared with the run's."""
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(runs / "cut", cut)
    before = digests(cut)
    capsys.readouterr()
    assert pretrain.main(["--output-dir", str(cut), "--resume", "--max-steps", "24"]) == 2
    assert "--resume: --max-steps 12 -> 24 (the run's args.json -> this command)" in capsys.readouterr().err
    assert digests(cut) == before
    assert pretrain.main(["--output-dir", str(cut), "--resume"]) == 0  # (its args.json says --debug-crash-at-step 8)
    assert_same_records(runs / "whole", cut)
    assert [(l["type"], l["step"], l.get("loss")) for l in read_jsonl(cut / "metrics.jsonl")] == [
        (l["type"], l["step"], l.get("loss")) for l in read_jsonl(runs / "whole" / "metrics.jsonl")]
    assert read_json(cut / "results.json")["accuracy"] == read_json(runs / "whole" / "results.json")["accuracy"]


def test_resume_auto_starts_continues_restarts_and_leaves_a_finished_run(runs, tmp_path, capsys):
    import shutil

    argv = [*RUN, "--resume", "auto"]
    # nothing there: starts (plain --resume refuses, pointing at --resume auto)
    fresh = tmp_path / "fresh"
    assert pretrain.main(["--output-dir", str(fresh), *RUN, "--resume"]) == 2
    assert "no run there yet); --resume auto continues a run when it can" in capsys.readouterr().err
    assert pretrain.main(["--output-dir", str(fresh), *argv]) == 0
    assert f"main.py: --resume auto: no run in {fresh} yet; starting it" in capsys.readouterr().out
    assert_same_records(runs / "whole", fresh)
    # a checkpoint: continues
    cut = tmp_path / "cut"
    shutil.copytree(runs / "cut", cut)
    assert pretrain.main(["--output-dir", str(cut), *argv]) == 0
    assert f"resuming from {cut / 'checkpoints' / 'step-6'}" in capsys.readouterr().out
    assert_same_records(runs / "whole", cut)
    # finished: left as it is, exit 0
    before = digests(cut)
    assert pretrain.main(["--output-dir", str(cut), *argv]) == 0
    assert "nothing to resume; its files are left as they are" in capsys.readouterr().out
    assert digests(cut) == before
    # stopped before its first checkpoint: the two messages no longer point at each other, and auto starts it over
    early = tmp_path / "early"
    assert pretrain.main(["--output-dir", str(early), *RUN, "--debug-crash-at-step", "2"]) == 3
    capsys.readouterr()
    assert pretrain.main(["--output-dir", str(early), *RUN]) == 2
    without = capsys.readouterr().err
    assert "a run stopped before its first checkpoint; pass --overwrite-output-dir to start it over" in without
    assert pretrain.main(["--output-dir", str(early), *RUN, "--resume"]) == 2
    with_resume = capsys.readouterr().err
    assert "nothing of it can be resumed; start it over with --overwrite-output-dir" in with_resume
    assert "pass --resume" not in without + with_resume
    assert pretrain.main(["--output-dir", str(early), *argv]) == 0
    [note] = [line for line in capsys.readouterr().out.splitlines() if "--resume auto" in line]
    assert note == (f"main.py: --resume auto: {early} holds a run stopped before its first checkpoint (a run saves one "
                    "every --checkpoint-minutes or --checkpoint-every N steps): nothing of it can be resumed; "
                    "starting it over in place")
    assert_same_records(runs / "whole", early)
