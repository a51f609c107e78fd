"""The shared flags, the data order across processes, and the run directory (no training here)."""

import argparse
import json

import numpy as np
import pytest

from earlybird.errors import EarlyBirdError
from earlybird.training import args as targs
from earlybird.training.config import TrainConfig
from earlybird.training.loop import epoch_permutation, make_scheduler, rank_batches, rank_eval_batches
from earlybird.training.rundir import RunDir


def parse(*argv):
    parser = targs.EntryParser(prog="prog", parents=[targs.common_parser()])
    return parser.parse_args(["--output-dir", "out", *argv])


@pytest.mark.parametrize("argv, message", [
    (["--self-pruning-ratio", "1.0", "--records", "r", "--prune-step", "3"], "--self-pruning-ratio: .*\\[0, 1\\)"),
    (["--inter-pruning-ratio", "-0.1"], "--inter-pruning-ratio"),
    (["--records", "r"], "--records needs --prune-step"),
    (["--records", "r", "--prune-plan", "p", "--prune-step", "1"], "give one"),
    (["--prune-plan", "p", "--random-prune", "1"], "go with --records"),
    (["--random-prune", "1"], "--random-prune needs --records"),
    (["--l1-self", "1e-4"], "--l1-self needs --self-slimming"),
    (["--resume", "--overwrite-output-dir"], "contradict"),
    (["--eb-method", "hamming", "--self-pruning-ratio", "0.3"], "pass --self-slimming"),
    (["--eb-method", "slope", "--self-slimming", "--self-pruning-ratio", "0.3", "--eb-threshold", "0.1"],
     "--eb-threshold does not apply to --eb-method slope"),
    (["--eb-method", "mk", "--self-slimming"], "give --self-pruning-ratio"),
    (["--eb-window", "10"], "--eb-window needs --eb-method"),
    (["--eb-method", "adf", "--self-slimming", "--self-pruning-ratio", "0.3", "--records", "r", "--prune-step", "1"],
     "cannot be combined"),
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--warmup-ratio", "1.5"], "--warmup-ratio"),
])
def test_bad_flag_combinations(argv, message):
    with pytest.raises(EarlyBirdError, match=message):
        TrainConfig.from_args(parse(*argv))


def test_good_flags_and_detector_parameters():
    args = parse("--self-slimming", "--inter-slimming", "--eb-method", "hamming", "--eb-threshold", "0.05",
                 "--eb-cached", "7", "--inter-pruning-ratio", "0.4", "--eb-block", "mlp", "--save-steps", "3,5")
    config = TrainConfig.from_args(args)
    assert dict(config.eb.params) == {"cached": 7, "threshold": 0.05}
    assert config.eb.ratio(config.pruning) == 0.4  # the watched block's pruning ratio
    assert args.save_steps == [3, 5]


def test_parser_errors_are_one_line(capsys):
    parser = targs.EntryParser(prog="prog", parents=[targs.common_parser()])
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--output-dir", "o", "--no-such-flag"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prog: error: unrecognized arguments: --no-such-flag")
    assert targs.fail("prog", "bad\nthing") == 2
    assert capsys.readouterr().err == "prog: error: bad thing\n"


def test_processes_share_each_global_batch_and_cover_the_epoch():
    perm = epoch_permutation(23, seed=1, epoch=0)
    assert sorted(perm) == list(range(23)) and not np.array_equal(perm, epoch_permutation(23, 1, 1))
    per_rank = [list(rank_batches(perm, 0, 5, per_device=2, world=2, rank=r)) for r in range(2)]
    one = list(rank_batches(perm, 0, 5, per_device=4, world=1, rank=0))
    for b in range(5):  # the union of the ranks' slices is the single process's batch, in order
        assert per_rank[0][b] + per_rank[1][b] == one[b]
    assert list(rank_batches(perm, 3, 5, 2, 2, 1)) == per_rank[1][3:]  # resuming mid-epoch


def test_eval_batches_gather_back_into_dataset_order():
    n, per_device, world = 11, 3, 2
    shards = [list(rank_eval_batches(n, per_device, world, r)) for r in range(world)]
    gathered = [i for step in zip(*shards) for shard in step for i in shard]
    assert gathered[:n] == list(range(n)) and all(i == n - 1 for i in gathered[n:])


def test_scheduler_warms_up_then_decays():
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, "linear", warmup=2, total=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:3] == [0.0, 0.5, 1.0] and lrs[-1] == pytest.approx(0.125)


def test_run_directory_refuses_to_mix_runs(tmp_path):
    out = tmp_path / "run"
    run = RunDir(out)
    run.check(resume=False, overwrite=False)  # nothing there yet
    run.open(overwrite=False)
    run.write_json(run.args, {"a": 1})
    (out / "notes.txt").write_text("mine")
    with pytest.raises(EarlyBirdError, match="in use by another run"):
        RunDir(out).open(overwrite=False)
    run.close()
    with pytest.raises(EarlyBirdError, match="already holds a run"):
        RunDir(out).check(resume=False, overwrite=False)
    with pytest.raises(EarlyBirdError, match="no checkpoint"):
        RunDir(out).check(resume=True, overwrite=False)
    again = RunDir(out)
    again.open(overwrite=True)  # removes what a run writes, nothing else
    again.close()
    assert not (out / "args.json").exists() and (out / "notes.txt").read_text() == "mine"


def test_checkpoints_rotate_and_metrics_truncate(tmp_path):
    run = RunDir(tmp_path)
    for step in (5, 10, 15):
        tmp = run.checkpoint_tmp(step)
        tmp.mkdir(parents=True)
        (tmp / "state.json").write_text("{}")
        run.commit_checkpoint(step, keep=2)
    run.checkpoint_tmp(20).mkdir()  # a kill mid-save leaves a temporary directory
    assert run.latest_checkpoint().name == "step-15"
    assert sorted(p.name for p in run.checkpoints.iterdir()) == [".tmp-step-20", "step-10", "step-15"]
    run.clean_temporaries()
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step-10", "step-15"]
    for step in (5, 10, 15):
        run.append_metrics({"step": step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2')  # a line cut by the kill
    run.truncate_metrics(10)
    assert [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [5, 10]


def test_eb_scale_scales_the_study_parameters_to_the_run_and_keeps_given_ones():
    from earlybird.training.ebtrain import EBTrain

    config = TrainConfig.from_args(parse("--self-slimming", "--self-pruning-ratio", "0.3", "--eb-method", "slope",
                                         "--eb-scale", "--eb-window", "40"))
    ebtrain = EBTrain(config.eb, config.pruning, total_steps=360)
    assert ebtrain.detector.detectors["msa"].params()["smooth"] == 5  # round(200 x 360 / 14774) = 5
    assert ebtrain.detector.detectors["msa"].params()["window"] == 40 and "scaled by 0.0244" in ebtrain.scaling
    unscaled = TrainConfig.from_args(parse("--self-slimming", "--self-pruning-ratio", "0.3", "--eb-method", "slope"))
    with pytest.raises(EarlyBirdError, match="--eb-scale"):
        EBTrain(unscaled.eb, unscaled.pruning, total_steps=360).check_budget()
    with pytest.raises(EarlyBirdError, match="--eb-scale needs --eb-method"):
        TrainConfig.from_args(parse("--eb-scale"))
