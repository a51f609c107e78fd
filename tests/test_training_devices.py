"""Several GPUs and machines, emulated on the CPU: checkpoints saved on a GPU resume anywhere (loaded to the CPU, the
optimizer places its state), a resume on a machine with fewer visible GPUs restores the RNG states it can and says
so in one line, every process draws its own dropout masks from the same data order, a slow data preparation on the
main process does not time the others out (--ddp-timeout-minutes), and EB-Train's detector reads nothing back from
the device on an ordinary step."""

import os
import random
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from earlybird.training import loop
from test_training_support import ROOT, load_script, read_json

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")
BASE = ["--disable-tqdm", "--logging-steps", "3", "--per-device-train-batch-size", "32", "--dropout", "0.1",
        "--max-steps", "6"]
SLIM = ["--self-slimming", "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2"]

pytestmark = pytest.mark.usefixtures("one_thread_only")


# --------------------------------------------------------------------------- resume: where the tensors go


def resave_as_if_on(device: str, path, monkeypatch):
    """Rewrite a torch.save file so that its tensors say they were saved on `device` (as a GPU run's are)."""
    content = torch.load(path, weights_only=False)
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: device)
        torch.save(content, path)


def test_a_checkpoint_saved_on_a_gpu_resumes_on_the_cpu(tmp_path, monkeypatch):
    """Optimizer, schedule and RNG files are loaded to the CPU (map_location), not to the device that saved them:
    on a GPU run every process would otherwise materialise AdamW's state on cuda:0, and here the load would fail."""
    run = tmp_path / "run"
    argv = ["--output-dir", str(run), *BASE, *SLIM, "--checkpoint-every", "3"]
    assert pretrain.main([*argv, "--debug-crash-at-step", "4"]) == 3
    checkpoint = run / "checkpoints" / "step-3"
    for name in ("optimizer.pt", "scheduler.pt", "rng-0.pt"):
        resave_as_if_on("cuda:0", checkpoint / name, monkeypatch)
    with pytest.raises(RuntimeError, match="CUDA"):  # the emulation holds: these are "GPU tensors" now
        torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert pretrain.main([*argv, "--resume"]) == 0
    assert read_json(run / "results.json")["step"] == 6


def test_fewer_visible_gpus_restore_the_rng_states_that_match(monkeypatch):
    """A checkpoint of a process that saw 4 GPUs, resumed where it sees 2: the first two CUDA generators are restored
    and a one-line note says so, instead of torch's IndexError on the third."""
    restored = {}

    def set_rng_state(state, device="cuda"):
        if device >= 2:
            raise IndexError("list index out of range")  # what torch.cuda does for a device it does not have
        restored[device] = state

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "device_count", lambda: 2, raising=False)
    saved = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "cuda": [torch.full((16,), i, dtype=torch.uint8) for i in range(4)]}
    note = loop._set_rng_state(saved)
    assert sorted(restored) == [0, 1] and all(int(restored[i][0]) == i for i in (0, 1))
    assert note and "\n" not in note and "4 devices" in note and "sees 2" in note
    restored.clear()
    saved["cuda"] = saved["cuda"][:2]
    assert loop._set_rng_state(saved) is None and sorted(restored) == [0, 1]
