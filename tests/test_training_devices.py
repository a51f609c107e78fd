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

from earlybird.records import load_records
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


# --------------------------------------------------------------------------- several machines: one output directory


class TwoMachines:
    """The main process's side of a 2-process run whose other process is on a machine that sees `other_dir` as the
    output directory (the same directory when the file system is shared): it looks there when they meet."""
    num_processes, is_main_process, device = 2, True, torch.device("cpu")

    def __init__(self, other_dir):
        self.other_dir, self.other_sees = other_dir, None

    def wait_for_everyone(self):
        self.other_sees = any(self.other_dir.glob(".earlybird-shared-*"))

    def reduce(self, tensor, op):
        return tensor + (0 if self.other_sees else 1)


def test_every_process_must_see_the_output_directory(tmp_path):
    """Each process writes its RNG state into the checkpoints: a machine whose --output-dir is a directory of its own
    is refused at the start (one line), not at the first checkpoint."""
    from earlybird.errors import EarlyBirdError
    from earlybird.training.rundir import RunDir
    from earlybird.training.runner import check_shared_output_dir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    check_shared_output_dir(run, TwoMachines(run.path))  # shared: nothing said, nothing left behind
    assert list(run.path.iterdir()) == []
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(EarlyBirdError, match=r"1 of 2 processes do not see the main process's files there; with "
                                             r"several machines, --output-dir must be on a file system they all share"):
        check_shared_output_dir(run, TwoMachines(tmp_path / "elsewhere"))
    assert list(run.path.iterdir()) == []


# --------------------------------------------------------------------------- two processes (gloo, torchrun)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(output_dir, *flags, fault=None, timeout=240):
    """`accelerate launch --multi_gpu --num_processes 2` on the CPU (as launch.bash does without a GPU), on a port of
    its own (other runs may hold the default one)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "1"}
    env.pop("EARLYBIRD_FAULT", None)
    if fault:
        env["EARLYBIRD_FAULT"] = fault
    command = [str(ROOT / ".venv" / "bin" / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(ROOT / "ViT_pretraining" / "main.py"),
               "--output-dir", str(output_dir), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=output_dir.parent)


STALL = 20  # seconds the main process spends "preparing the data" while the other waits for it


def test_a_slow_data_preparation_dies_only_past_the_ddp_timeout(tmp_path):
    """The main process prepares the data for 20 s while the other waits in main_process_first's barrier: with
    --ddp-timeout-minutes 10 s the waiting process stops with one line naming the flag; with the default (180 min)
    the run goes on (torch's default under NCCL, 10 minutes, is what ImageNet's index or SQuAD's features exceed).
    The living run also shows per-process seeding: its two processes' RNG states differ after training with dropout
    (same seed on every rank: identical dropout masks), its model was initialised as one process initialises it."""
    argv = ["--disable-tqdm", "--max-steps", "2", "--per-device-train-batch-size", "16", "--dropout", "0.1",
            "--checkpoint-every", "2", *SLIM]
    short = launch_two(tmp_path / "short", *argv, "--ddp-timeout-minutes", str(10 / 60),
                       fault=f"data-prepare:stall={STALL}@1")
    assert short.returncode != 0
    assert ("error: waited more than --ddp-timeout-minutes 0.166667 for the main process to prepare the data"
            in short.stderr), short.stderr[-3000:]

    two = tmp_path / "two"
    lives = launch_two(two, *argv, fault=f"data-prepare:stall={STALL}@1")
    assert lives.returncode == 0, lives.stderr[-3000:]
    assert read_json(two / "results.json")["step"] == 2

    # Each process drew its own dropout masks: its generator's state after the same two steps differs.
    states = [torch.load(two / "checkpoints" / "step-2" / f"rng-{rank}.pt", weights_only=False)["rng"]
              for rank in (0, 1)]
    assert not torch.equal(states[0]["torch"], states[1]["torch"])
    # The model was initialised from the shared seed, as a single process initialises it.
    one = tmp_path / "one"
    assert pretrain.main(["--output-dir", str(one), *argv[:-len(SLIM)], "--per-device-train-batch-size", "32",
                          *SLIM]) == 0
    from safetensors.torch import load_file

    a, b = load_file(two / "init" / "model.safetensors"), load_file(one / "init" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- EB-Train: no host sync per step

EARLYBIRD = str(ROOT / "earlybird")


def test_ebtrain_reads_nothing_back_on_an_ordinary_step(tmp_path, monkeypatch):
    """Hamming checks every step. Every way our code can bring a tensor to the host (.cpu(), .item(), .tolist(),
    bool()/float()/int(), a blocking .to("cpu"), an object broadcast) is counted with the step it happens at: none on
    a step that neither logs (5, 10, 12) nor flushes the records (chunk 4: 4, 8, 12) nor draws. On a GPU each would
    drain the device's queue. (A device tensor reaches numpy only through those, so .numpy() of the host copies the
    detector reads once their transfer is done is not counted.)

    The draw (step 6) is decided after step 7's forward and backward, and step 7 is redone on the pruned model: the
    run is bitwise the run that decides at once (logging every step reads the coefficients back at every step)."""
    steps: list[int] = []
    running = {}

    def counted(original, blocking=lambda *a, **k: True):
        def spy(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "trainer" in running and caller.startswith(EARLYBIRD) and blocking(*args, **kwargs):
                steps.append(running["trainer"].step)
            return original(*args, **kwargs)
        return spy

    for name in ("cpu", "item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))

    def to_host(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        return str(target).startswith("cpu") and not kwargs.get("non_blocking", False)

    monkeypatch.setattr(torch.Tensor, "to", counted(torch.Tensor.to, to_host))
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", counted(accelerate.utils.broadcast_object_list))
    fit = loop.Trainer.fit

    def spied_fit(self):
        running["trainer"] = self
        try:
            return fit(self)
        finally:
            running.clear()

    monkeypatch.setattr(loop.Trainer, "fit", spied_fit)
    argv = ["--disable-tqdm", "--max-steps", "12", "--per-device-train-batch-size", "32", "--dropout", "0.1", *SLIM,
            "--record-chunk", "4", "--eb-method", "hamming", "--eb-cached", "3", "--eb-threshold", "0.01",
            "--self-pruning-ratio", "0.5"]
    deferred, at_once = tmp_path / "deferred", tmp_path / "at-once"
    assert pretrain.main(["--output-dir", str(deferred), *argv, "--logging-steps", "5"]) == 0
    summary = read_json(deferred / "ebtrain.json")
    assert summary["draw_step"] == 6 and len(summary["detectors"]["msa"]["trace"]) == 4  # checks at 3, 4, 5, 6
    assert steps and set(steps) <= {4, 5, 6, 8, 10, 12}, sorted(set(steps))

    assert pretrain.main(["--output-dir", str(at_once), *argv, "--logging-steps", "1"]) == 0
    assert read_json(at_once / "ebtrain.json")["detectors"] == summary["detectors"]
    assert read_json(at_once / "plan.json") == read_json(deferred / "plan.json")
    assert np.array_equal(load_records(at_once / "records").msa, load_records(deferred / "records").msa)
    from safetensors.torch import load_file

    a, b = load_file(at_once / "final" / "model.safetensors"), load_file(deferred / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_json(at_once / "results.json")["accuracy"] == read_json(deferred / "results.json")["accuracy"]
