import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from earlybird.cli import SUBCOMMANDS, main
from earlybird.detectors import detect, hamming_table
from earlybird.plans import load_plan
from earlybird.records import CoefficientRecorder, load_records
from earlybird.synthetic import synthetic_coefficients

CONSOLE_SCRIPT = Path(sys.executable).parent / "earlybird"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "run"
    heads = synthetic_coefficients(1, layers=4, heads=6, steps=600, plateau=300)
    neurons = synthetic_coefficients(2, layers=4, heads=16, steps=600, plateau=300)
    with CoefficientRecorder(path, chunk=128, meta={"model_type": "synthetic"}) as recorder:
        for step in range(600):
            recorder.record(step, torch.from_numpy(heads[step]), torch.from_numpy(neurons[step]))
    return path


SMALL = ["--smooth", "20", "--window", "50", "--every", "25"]


def run_main(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_detect_prints_the_draw_step(capsys, run_dir):
    for method, extra in (("hamming", ["--cached", "5", "--threshold", "0.1"]), ("mk", SMALL)):
        code, out, err = run_main(capsys, ["detect", str(run_dir), "--ratio", "0.3", "--method", method] + extra)
        assert code == 0 and err == ""
        params = {"cached": 5, "threshold": 0.1} if method == "hamming" else {"smooth": 20, "window": 50, "every": 25}
        expected = detect(run_dir, "msa", 0.3, "layerwise", method, **params).draw_step
        assert out.strip() == ("none" if expected is None else str(expected))


def test_detect_json(capsys, run_dir):
    code, out, _ = run_main(capsys, ["detect", str(run_dir), "--block", "mlp", "--ratio", "0.5", "--scope", "global",
                                     "--method", "slope", "--maxlags", "2", "--patience", "2", "--json"] + SMALL)
    assert code == 0
    data = json.loads(out)
    expected = detect(run_dir, "mlp", 0.5, "global", "slope", maxlags=2, patience=2,
                      smooth=20, window=50, every=25)
    assert data["method"] == "slope" and data["draw_step"] == expected.draw_step
    assert data["total_steps"] == 600 and isinstance(data["trace"], list) and data["trace"]
    assert data["params"]["maxlags"] == 2 and data["params"]["patience"] == 2 and data["params"]["block"] == "mlp"


def test_detect_none_when_never_drawn(capsys, run_dir):
    code, out, _ = run_main(capsys, ["detect", str(run_dir), "--ratio", "0.3", "--method", "hamming",
                                     "--cached", "500", "--threshold", "0.0001"])
    assert code == 0 and out.strip() == "none"
    code, out, _ = run_main(capsys, ["detect", str(run_dir), "--ratio", "0.3", "--method", "hamming",
                                     "--cached", "500", "--threshold", "0.0001", "--json"])
    assert json.loads(out)["draw_step"] is None


def test_hamming_table_markdown_and_csv(capsys, run_dir):
    argv = ["hamming-table", str(run_dir), "--ratios", "0.3", "0.8", "--cached", "5", "50", "200",
            "--thresholds", "0.1", "0.01"]
    expected = hamming_table(run_dir, "msa", (0.3, 0.8), (5, 50, 200), (0.1, 0.01))
    code, out, _ = run_main(capsys, argv)
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0] == "| cached masks | ratio 0.3, eps 0.1 | ratio 0.3, eps 0.01 | ratio 0.8, eps 0.1 | ratio 0.8, eps 0.01 |"
    first = [cell.strip() for cell in lines[1].strip("|").split("|")]
    assert first[0] == "5"
    assert first[1:] == [str(expected[(r, 5, t)]) if expected[(r, 5, t)] is not None else "none"
                         for r in (0.3, 0.8) for t in (0.1, 0.01)]
    assert "Total steps: 600" in out

    code, out, _ = run_main(capsys, argv + ["--csv"])
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][0] == "cached" and len(rows) == 4
    for row, cached in zip(rows[1:], (5, 50, 200)):
        values = [expected[(r, cached, t)] for r in (0.3, 0.8) for t in (0.1, 0.01)]
        assert row == [str(cached)] + ["" if v is None else str(v) for v in values]


def test_plan_writes_a_valid_plan(capsys, run_dir, tmp_path):
    out_path = tmp_path / "plan.json"
    code, out, _ = run_main(capsys, ["plan", str(run_dir), "--step", "400", "--self-ratio", "0.5",
                                     "--inter-ratio", "0.25", "--inter-scope", "global", "-o", str(out_path)])
    assert code == 0 and str(out_path) in out
    plan = load_plan(out_path)
    assert plan["provenance"]["step"] == 400 and plan["provenance"]["inter_scope"] == "global"
    assert all(len(v) == 3 for v in plan["pruned_heads"].values())
    assert sum(len(v) for v in plan["pruned_intermediate"].values()) == 16
    code, _, _ = run_main(capsys, ["plan", str(run_dir), "--step", "400", "--self-ratio", "0.5",
                                   "--inter-ratio", "0.25", "--random", "3", "-o", str(tmp_path / "random.json")])
    assert code == 0 and load_plan(tmp_path / "random.json")["provenance"]["random_seed"] == 3


def test_subcommands_are_registered_in_one_place():
    assert {"detect", "hamming-table", "plan"} <= set(SUBCOMMANDS)


def make_bad_inputs(tmp_path, run_dir):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "msa.npy").write_bytes(b"\x93NUMPY garbage")
    (corrupt / "steps.npy").write_bytes(b"")
    wrong = tmp_path / "wrong_shape"
    wrong.mkdir()
    np.save(wrong / "msa.npy", np.zeros((5, 4), np.float32))
    np.save(wrong / "steps.npy", np.arange(5))
    nan = tmp_path / "nan"
    nan.mkdir()
    values = np.ones((5, 2, 3), np.float32)
    values[2, 1, 1] = np.nan
    np.save(nan / "msa.npy", values)
    np.save(nan / "steps.npy", np.arange(5))
    run = str(run_dir)
    return {
        "missing file": ["detect", str(tmp_path / "nowhere"), "--ratio", "0.3", "--method", "mk"],
        "corrupt file": ["detect", str(corrupt), "--ratio", "0.3", "--method", "mk"],
        "wrong shape": ["detect", str(wrong), "--ratio", "0.3", "--method", "mk"],
        "nan": ["detect", str(nan), "--ratio", "0.3", "--method", "mk"],
        "ratio": ["detect", run, "--ratio", "1.5", "--method", "mk"],
        "negative ratio": ["plan", run, "--step", "4", "--self-ratio", "-0.1", "--inter-ratio", "0", "-o", str(tmp_path / "p.json")],
        "step not recorded": ["plan", run, "--step", "9999", "--self-ratio", "0.3", "--inter-ratio", "0", "-o", str(tmp_path / "p.json")],
        "unknown method": ["detect", run, "--ratio", "0.3", "--method", "bogus"],
        "option of another method": ["detect", run, "--ratio", "0.3", "--method", "slope", "--cached", "5"],
        "not a number": ["detect", run, "--ratio", "abc", "--method", "mk"],
        "missing option": ["detect", run, "--method", "mk"],
        "no subcommand": [],
        "table ratio": ["hamming-table", run, "--ratios", "1.2"],
        "output is a directory": ["plan", run, "--step", "4", "--self-ratio", "0.3", "--inter-ratio", "0",
                                  "-o", str(run_dir)],
        "output directory missing": ["plan", run, "--step", "4", "--self-ratio", "0.3", "--inter-ratio", "0",
                                     "-o", str(tmp_path / "no" / "such" / "dir" / "p.json")],
    }


def test_bad_input_exits_2_with_one_line(capsys, tmp_path, run_dir):
    for label, argv in make_bad_inputs(tmp_path, run_dir).items():
        code, out, err = run_main(capsys, argv)
        assert code == 2, label
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("earlybird: error: "), (label, err)
        assert "Traceback" not in err and out == "", label


def test_console_script(tmp_path, run_dir):
    assert CONSOLE_SCRIPT.exists(), "install the project: pip install --no-deps -e ."
    done = subprocess.run([str(CONSOLE_SCRIPT), "detect", str(run_dir), "--ratio", "0.3", "--method", "adf",
                           "--json"] + SMALL, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["draw_step"] == detect(load_records(run_dir), "msa", 0.3, method="adf", smooth=20, window=50,
                                       every=25).draw_step
    done = subprocess.run([str(CONSOLE_SCRIPT), "detect", str(tmp_path / "nowhere"), "--ratio", "0.3",
                           "--method", "mk"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("earlybird: error: missing")


def test_plan_takes_the_training_flag_names_and_errors_name_the_flag_typed(capsys, run_dir, tmp_path):
    old = ["plan", str(run_dir), "--step", "300", "--self-ratio", "0.5", "--inter-ratio", "0.25",
           "--self-scope", "global", "-o", str(tmp_path / "old.json")]
    new = ["plan", str(run_dir), "--step", "300", "--self-pruning-ratio", "0.5", "--inter-pruning-ratio", "0.25",
           "--self-pruning-scope", "global", "-o", str(tmp_path / "new.json")]
    assert main(old) == 0 and main(new) == 0
    assert load_plan(tmp_path / "old.json") == load_plan(tmp_path / "new.json")
    capsys.readouterr()
    assert main(new[:4] + ["--self-pruning-ratio", "1.5"] + new[6:]) == 2
    assert "--self-pruning-ratio: pruning ratio must be in [0, 1)" in capsys.readouterr().err
    assert main(["hamming-table", str(run_dir), "--ratios", "0.3", "1.2"]) == 2
    assert "--ratios: pruning ratio must be in [0, 1), got 1.2" in capsys.readouterr().err


def test_every_option_has_help(capsys):
    from earlybird.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help, f"earlybird {name}: {action.option_strings or action.dest} has no help"


def test_detect_takes_a_run_directory_several_methods_and_scaling(capsys, run_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "records").symlink_to(run_dir, target_is_directory=True)
    code, out, err = run_main(capsys, ["detect", str(run), "--ratio", "0.3", "--method", "hamming,mk", "--json"] + SMALL[:4])
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["method"] for d in lines] == ["hamming", "mk"]
    assert lines[0]["draw_step"] == detect(run_dir, "msa", 0.3, "layerwise", "hamming").draw_step
    assert lines[1]["draw_step"] == detect(run_dir, "msa", 0.3, "layerwise", "mk", smooth=20, window=50).draw_step
    # the study's window of 300 can never test on 250 steps: the error names --scale; with --scale the scaled
    # parameters are printed and used, and a parameter given explicitly is kept
    short = tmp_path / "short"
    records = load_records(run_dir)
    with CoefficientRecorder(short, chunk=50) as recorder:
        for i in range(250):
            recorder.record(int(records.steps[i]), torch.from_numpy(np.array(records.msa[i])))
    code, out, err = run_main(capsys, ["detect", str(short), "--ratio", "0.3", "--method", "all"])
    assert code == 2 and "--scale" in err
    code, out, err = run_main(capsys, ["detect", str(short), "--ratio", "0.3", "--method", "all", "--scale",
                                       "--window", "40"])
    assert code == 0 and "slope: smooth 5, every 5: the study's 200/100 scaled by" in err
    expected = detect(short, "msa", 0.3, "layerwise", "adf", smooth=5, window=40, every=5).draw_step
    assert f"adf: {'none' if expected is None else expected}" in out.splitlines()
    assert main(["plan", str(run), "--step", "300", "--self-pruning-ratio", "0.5", "--inter-pruning-ratio", "0.2",
                 "-o", str(tmp_path / "p.json")]) == 0
    assert main(["hamming-table", str(run), "--cached", "5"]) == 0


def test_version(capsys):
    import earlybird

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"earlybird {earlybird.__version__}"


@pytest.mark.parametrize("profile, extra", [("paper", ["--scale"]), ("original", ["--scale", "--window", "60"])])
def test_detect_block_both_is_each_block_in_turn(capsys, run_dir, profile, extra):
    """--block both: one process, the records loaded once; its output is --block msa's followed by --block mlp's."""
    argv = ["detect", str(run_dir), "--ratio", "0.3", "--method", "slope,mk,adf,hamming", "--profile", profile,
            "--full-trace", "--json", *extra]
    code, both, err_both = run_main(capsys, [*argv, "--block", "both"])
    assert code == 0
    separate = []
    for block in ("msa", "mlp"):
        code, out, err = run_main(capsys, [*argv, "--block", block])
        assert code == 0
        separate += out.splitlines()
    assert both.splitlines() == separate and len(separate) == 8
    assert [json.loads(line)["params"]["block"] for line in separate] == ["msa"] * 4 + ["mlp"] * 4
    code, text, _ = run_main(capsys, ["detect", str(run_dir), "--ratio", "0.3", "--method", "hamming,mk",
                                      "--block", "both", *SMALL])
    assert code == 0 and text.splitlines()[0].startswith("msa hamming: ") and text.splitlines()[3].startswith("mlp mk: ")


def test_a_detector_that_can_never_test_names_its_first_test_and_offers_scale_only_when_it_helps(capsys, tmp_path):
    msa = synthetic_coefficients(5, layers=2, heads=6, steps=360, plateau=200)
    for steps in (360, 20):
        with CoefficientRecorder(tmp_path / str(steps), chunk=64) as recorder:
            for t in range(steps):
                recorder.record(t + 1, msa=msa[t])
    code, _, err = run_main(capsys, ["detect", str(tmp_path / "360"), "--ratio", "0.3", "--method", "slope"])
    assert code == 2 and "so its first test would be at step 399" in err and "--scale to scale" in err
    # 20 steps: the scaled window (its floor, 30) is still too long: --scale is not offered
    code, _, err = run_main(capsys, ["detect", str(tmp_path / "20"), "--ratio", "0.3", "--method", "slope"])
    assert code == 2 and "first test would be at step 399" in err and "--scale" not in err


def test_one_resolver_for_a_run_directory_or_the_thing_inside(capsys, tmp_path):
    """A run directory is taken wherever records, a plan or a model is: the training entry points' --records and
    --prune-plan, `earlybird export` of a Trainer output directory (its ticket/); what cannot be decided is refused in
    one line listing what the directory holds (earlybird.layout.resolve_input)."""
    import shutil

    from test_training_support import load_script, one_thread

    pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
    base = ["--disable-tqdm", "--max-steps", "4", "--per-device-train-batch-size", "32", "--checkpoint-every", "0"]
    prune = ["--prune-step", "3", "--self-pruning-ratio", "0.5", "--inter-pruning-ratio", "0.5"]
    slim, by_records, by_run, by_plan = (tmp_path / name for name in ("slim", "by-records", "by-run", "by-plan"))
    with one_thread():
        assert pretrain.main(["--output-dir", str(slim), *base, "--self-slimming", "--inter-slimming",
                              "--l1-self", "1e-2", "--l1-inter", "1e-2"]) == 0
        assert pretrain.main(["--output-dir", str(by_records), *base, "--records", str(slim / "records"), *prune]) == 0
        assert pretrain.main(["--output-dir", str(by_run), *base, "--records", str(slim), *prune]) == 0
        assert pretrain.main(["--output-dir", str(by_plan), *base, "--prune-plan", str(by_run)]) == 0
    plans = [json.loads((run / "plan.json").read_text()) for run in (by_records, by_run, by_plan)]
    assert plans[0] == plans[1] == plans[2]
    results = [json.loads((run / "results.json").read_text()) for run in (by_records, by_run, by_plan)]
    assert results[0]["accuracy"] == results[1]["accuracy"] == results[2]["accuracy"]
    capsys.readouterr()

    # a directory that is neither: one line listing what it found
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with one_thread():
        assert pretrain.main(["--output-dir", str(tmp_path / "x"), *base, "--records", str(stray), *prune]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (f"main.py: error: --records {stray}: neither records (msa.npy / mlp.npy with steps.npy, or the "
                    "original code's .npy files) nor a run directory (no records); found: notes.txt")

    # earlybird export: a Trainer output directory (its ticket/), as a run directory (its final/)
    trainer = tmp_path / "trainer"
    shutil.copytree(by_run / "final", trainer / "ticket")
    (trainer / "checkpoint-4").mkdir()
    code, out, err = run_main(capsys, ["export", str(trainer), "-o", str(tmp_path / "exported")])
    assert code == 0, err
    assert (tmp_path / "exported" / "config.json").is_file()
    shutil.copytree(by_run / "final", trainer / "final")
    code, out, err = run_main(capsys, ["export", str(trainer), "-o", str(tmp_path / "exported-2")])
    assert code == 2 and err.strip().endswith(f"{trainer}: holds final/ and ticket/; cannot tell which is a model: "
                                              "name one of them"), err
    assert not (tmp_path / "exported-2").exists()
