"""A detector declared and registered in one place shows up everywhere detection happens: `earlybird detect` (its
options and help), the training flags (`--eb-method`, `--eb-<param>`), EB-Train, and the report."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from earlybird.cli import main as cli_main
from earlybird.detectors import DETECTORS, EVERY, PATIENCE, Detector, Param, detect
from earlybird.records import CoefficientRecorder
from earlybird.report import build_report
from earlybird.synthetic import synthetic_coefficients
from earlybird.training import args as targs
from earlybird.training.config import TrainConfig
from test_training_support import load_script, one_thread, read_json

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")


class Throwaway(Detector):
    """Draws at its `wait`-th check, whatever the masks say."""

    method = "throwaway"
    title = "throwaway rule (wait {wait})"
    PARAMS = (Param("wait", int, 3, "checks to wait before drawing", minimum=1), replace(EVERY, default=2), PATIENCE)

    def update(self, step, mask) -> bool:
        if not self._observe_step(step):
            return False
        passed = self.checks >= self.wait
        self.trace.append({"step": int(step), "passed": passed})
        return self._conclude(step, passed)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(DETECTORS, Throwaway.method, Throwaway)  # the one place a new detector is added


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("registry") / "records"
    coefs = synthetic_coefficients(0, layers=2, heads=4, steps=60, plateau=30)
    with CoefficientRecorder(path, chunk=16) as recorder:
        for t in range(60):
            recorder.record(t + 1, msa=torch.from_numpy(coefs[t]))
    return path


def test_the_cli_takes_its_method_and_parameters(registered, records_dir, capsys):
    with pytest.raises(SystemExit):
        cli_main(["detect", "--help"])
    help_text = capsys.readouterr().out
    assert "throwaway" in help_text and "--wait" in help_text and "checks to wait before drawing" in help_text
    assert cli_main(["detect", str(records_dir), "--ratio", "0.5", "--method", "throwaway", "--wait", "4"]) == 0
    expected = detect(records_dir, "msa", 0.5, "layerwise", "throwaway", wait=4).draw_step
    assert capsys.readouterr().out.strip() == str(expected) == "7"  # every 2 steps: checks at steps 1, 3, 5, 7
    assert cli_main(["detect", str(records_dir), "--ratio", "0.5", "--method", "slope", "--wait", "4"]) == 2
    assert "--wait does not apply to --method slope" in capsys.readouterr().err


def test_the_training_flags_and_ebtrain_take_it(registered, tmp_path):
    parser = targs.EntryParser(prog="prog", parents=[targs.common_parser()])
    args = parser.parse_args(["--output-dir", "out", "--eb-method", "throwaway", "--eb-wait", "2", "--self-slimming",
                              "--self-pruning-ratio", "0.5"])
    assert dict(TrainConfig.from_args(args).eb.params) == {"wait": 2}
    with one_thread():
        code = pretrain.main(["--output-dir", str(tmp_path), "--max-steps", "8", "--per-device-train-batch-size", "32",
                              "--disable-tqdm", "--self-slimming", "--l1-self", "1e-3", "--eb-method", "throwaway",
                              "--eb-wait", "2", "--self-pruning-ratio", "0.5"])
    assert code == 0
    summary = read_json(tmp_path / "ebtrain.json")
    assert summary["method"] == "throwaway" and summary["draw_step"] == 3 and summary["params"]["wait"] == 2


def test_the_report_lists_it(registered, records_dir, tmp_path):
    text = build_report([records_dir], tmp_path / "report", ratios=(0.5,), log=lambda _: None).read_text()
    draw = detect(records_dir, "msa", 0.5, "layerwise", "throwaway").draw_step
    assert f"| MSA | 50% | throwaway rule (wait 3) | {draw} |" in text
