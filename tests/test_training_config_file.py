"""--config FILE: a run's args.json given back repeats the run (bitwise-equal records, the same metrics); flags on the
command line override the file; older flag names are accepted; a bad file is one line naming the file and the key,
exit 2, nothing created."""

import json

import numpy as np
import pytest

from earlybird.records import load_records
from test_training_support import load_script, read_json, read_jsonl

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
RUN = ["--disable-tqdm", "--logging-steps", "3", "--per-device-train-batch-size", "32", "--dropout", "0.1",
       "--max-steps", "9", "--self-slimming", "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2",
       "--checkpoint-every", "4", "--save-steps", "2,5", "--record-chunk", "4"]

pytestmark = pytest.mark.usefixtures("one_thread_only")


def parse(*argv):
    return pretrain.build_parser().parse_args([str(a) for a in argv])


def without_timings(path):
    return [{k: v for k, v in line.items() if k not in ("elapsed", "train_wall_s")} for line in read_jsonl(path)]


def test_args_json_given_back_repeats_the_run_and_flags_override_it(tmp_path):
    first = tmp_path / "first"
    assert pretrain.main(["--output-dir", str(first), *RUN, "--eb-method", "hamming", "--eb-threshold", "0.3",
                          "--eb-cached", "3", "--self-pruning-ratio", "0.5"]) == 0
    again = tmp_path / "again"
    assert pretrain.main(["--config", str(first / "args.json"), "--output-dir", str(again)]) == 0
    a, b = load_records(first / "records"), load_records(again / "records")
    assert a.steps.tolist() == b.steps.tolist()
    assert np.array_equal(a.msa, b.msa) and np.array_equal(a.mlp, b.mlp)
    assert without_timings(first / "metrics.jsonl") == without_timings(again / "metrics.jsonl")
    assert read_json(first / "ebtrain.json")["draw_step"] == read_json(again / "ebtrain.json")["draw_step"]
    saved, repeated = read_json(first / "args.json"), read_json(again / "args.json")
    assert {k: v for k, v in saved.items() if k not in ("output_dir", "config")} == \
        {k: v for k, v in repeated.items() if k not in ("output_dir", "config")}

    # a flag given on the command line wins over the file
    shorter = tmp_path / "shorter"
    assert pretrain.main(["--config", str(first / "args.json"), "--output-dir", str(shorter), "--max-steps", "4"]) == 0
    assert read_json(shorter / "results.json")["step"] == 4 and read_json(shorter / "args.json")["eb_cached"] == 3


def test_a_resumed_runs_args_json_repeats_the_run_it_describes(tmp_path):
    run = tmp_path / "run"
    assert pretrain.main(["--output-dir", str(run), *RUN, "--debug-crash-at-step", "6"]) == 3
    assert pretrain.main(["--output-dir", str(run), *RUN, "--resume"]) == 0
    assert read_json(run / "args.json")["resume"] is True
    # resume / overwrite_output_dir say what one command does with its directory: not taken from a file
    args = parse("--config", run / "args.json", "--output-dir", tmp_path / "new")
    assert args.resume is False and args.overwrite_output_dir is False and args.max_steps == 9


def test_a_yaml_file_with_older_flag_names(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: out\nself_pruning_method: global\ninter_pruning_method: global\n"
                    "learning_rate: 1e-3\nsave_steps: [3, 6]\nflip: true\neb_cached: 3\nmax_steps: '7'\n")
    args = parse("--config", path)  # --output-dir comes from the file
    assert args.output_dir == "out" and args.self_pruning_scope == args.inter_pruning_scope == "global"
    assert args.learning_rate == 1e-3 and args.save_steps == [3, 6] and args.flip is True and args.max_steps == 7
    assert args.eb_cached == 3
    assert not hasattr(parse("--output-dir", "x"), "eb_cached")  # a detector parameter not given leaves no attribute


BAD = {  # file name, content, what the one line must say
    "unknown key": ("run.json", {"output_dir": "x", "max_stepz": 3}, "unknown key 'max_stepz'"),
    "an int given a float": ("run.json", {"max_steps": 3.5}, "key 'max_steps' must be an integer or null, got 3.5"),
    "a number given text": ("run.json", {"max_grad_norm": "big"}, "key 'max_grad_norm' must be a number, got 'big'"),
    "a switch given a number": ("run.json", {"self_slimming": 1}, "key 'self_slimming' must be true or false, got 1"),
    "a choice not offered": ("run.json", {"lr_scheduler": "cyclic"},
                             "key 'lr_scheduler' must be one of linear, cosine, constant, got 'cyclic'"),
    "steps given text": ("run.json", {"save_steps": [1, "two"]}, "key 'save_steps' must be a list of integers >= 0"),
    "null where a value is needed": ("run.json", {"seed": None}, "key 'seed' must be an integer, got None"),
    "not an object": ("run.json", [1, 2], "expected an object of flag names and values, got list"),
    "not JSON": ("run.json", "{max_steps: 3", "not valid JSON"),
    "not YAML": ("run.yaml", "a: [1, 2\n", "not valid YAML"),
    "missing": ("absent.json", None, "cannot read it (No such file or directory)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_config_file_is_one_line_naming_the_file_and_key(case, tmp_path, capsys):
    name, content, expected = BAD[case]
    path = tmp_path / name
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:  # (argparse's way out, as for any bad flag)
        pretrain.main(["--config", str(path), "--output-dir", str(tmp_path / "out")])
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"main.py: error: --config {path}: {expected}"), line
    assert not (tmp_path / "out").exists()
