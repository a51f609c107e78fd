"""The benchmarks under bench/ do not rot: the quick pass of each exits 0 and prints its table with the expected rows.

Timing values are not checked (they are noise at these sizes). The scripts run as subprocesses, two at a time (each
uses one thread), so the whole test stays around a minute on two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {
    "pruned_speed.py": [
        "| config | pass | variant | GFLOP / batch |",
        "| ViT-tiny, batch 4, 32² | inference | dense |",
        "| ViT-tiny, batch 4, 32² | inference | 80% pruned |",
        "| ViT-tiny, batch 4, 32² | train step | 30% pruned |",
        "| BERT-tiny, batch 4 x seq 32 | inference | 80%, global (uneven per layer) |",
        "| BERT-tiny, batch 4 x seq 32 | inference | 80%, FFN width to x16 |",
        "| BERT-tiny, batch 4 x seq 64 | inference | 80% pruned |",
        "| config | variant | attention (s) |",
        "| model | variant | kept heads / layer |",
        "| BERT-tiny | 80% pruned | 1 | 51 |",
        "- Goal (speed-up >= 0.8 x FLOPs limit at 80%)",
    ],
    "recorder_cost.py": [
        "| CoefficientRecorder `record()` without a flush (median) |",
        "| CoefficientRecorder amortised over 1000 steps",
        "| naive, amortised over 400 steps |",
        "| CoefficientRecorder | msa 2x4 + mlp 2x256 (2.08 KB/step) | 1000 |",
        "| naive | msa 2x4 + mlp 2x256 (2.08 KB/step) | 400 |",
        "| naive *extrapolated* | msa 2x4 + mlp 2x256 (2.08 KB/step) | 1000 |",
        "| CoefficientRecorder | msa 2x4 + mlp 2x32 (288 B/step) | 3000 |",
        "- Overhead goal (<= 1% of a step)",
    ],
    "detector_cost.py": [
        "| slope | window 30, smooth 20, every 10 | msa 4x12 |",
        "| mk | window 300, smooth 20, every 10 | mlp 4x256 |",
        "| adf | window 30, smooth 20, every 10 | mlp 4x256 |",
        "| hamming | FIFO 5 masks, every 1",
        "| msa | load_records (both blocks) |",
        "| mlp | one pass |",
        "| mlp | adf |",
        "- Check goal (<= 20 ms at window 30)",
        "- Full-scan goal (all four methods <= 10 s)",
    ],
    "ebtrain_savings.py": [
        "| (c) dense | - | - |",
        "| slimming run alone (part of (b)) |",
        "| (b) slim to the end, prune, retrain | 0.5 | 40 |",
        "| (a) EB-Train slope (--eb-smooth 3 --eb-window 10 --eb-every 5) | 0.5 |",
        "| (a) EB-Train hamming (defaults) | 0.5 |",
        "- Note: SST-2 part skipped",
    ],
    "slimming_overhead.py": [
        "| ViT (tiny, 32², batch 4) | sdpa | both | 4 |",
        "| ViT (tiny, 32², batch 4) | sdpa | heads only | 4 |",
        "| ViT (tiny, 32², batch 4) | sdpa | neurons only | 4 |",
        "| ViT (tiny, 32², batch 4) | eager | both | 4 |",
        "| BERT (tiny, seq 32, batch 4) | sdpa | neurons only | 4 |",
        "| BERT (tiny, seq 32, batch 4) | eager | both | 4 |",
        "- Interval: 95% t-interval on the mean of the per-pair log-ratios",
    ],
    "export_speed.py": [
        "| config | batch | runtime | model | latency (ms) |",
        "| ViT-tiny, 32² | 1 | PyTorch | dense |",
        "| ViT-tiny, 32² | 4 | onnxruntime | 80% ticket |",
        "| BERT-tiny, seq 32 | 1 | onnxruntime | 80% ticket |",
        "| config | model | checkpoint (MB) | hf export (MB) | ONNX (MB) |",
        "| BERT-tiny, seq 32 | 80% ticket |",
        "- ViT-tiny, 32²: the exported 80% ticket takes",
    ],
    "loop_overhead.py": [
        "| bare step (forward + backward + AdamW, pre-made batch) |",
        "| training loop (`Trainer.fit` of `ViT_pretraining/main.py`) |",
        "| data |",
        "| recording |",
        "- Goal (loop <= 1.15x the bare step)",
        "| `ViT_pretraining/main.py` (digits, slimming) from launch to the end of its first step |",
        "| 0 |",
    ],
    "image_pipeline.py": [
        "| images | transform | variant | images / CPU-s (median of rounds) |",
        "| ImageNet-sized 500x375 (8) | train | reference |",
        "| ImageNet-sized 500x375 (8) | train | earlybird | ",
        "| large 640x480 (8) | eval | earlybird, no draft |",
        "| workers per GPU x GPUs | float32 batches (before) | uint8 batches (now) |",
        "- Docker's default `/dev/shm` is 64 MB",
    ],
    "llm_pruned_speed.py": [
        "Ticket: 50% of heads and FFN neurons, uniform scope, GQA rule per-group: 4 query heads (2 per KV group of 4) "
        "and 48 neurons in every layer; exported config: num_attention_heads 4, num_key_value_heads 2, "
        "intermediate_size 48, auto_map absent.",
        "| PyTorch, this process | dense (patched code) |",
        "| PyTorch, this process | pruned (patched code) |",
        "| PyTorch, this process | pruned, standard export (unpatched modeling file) |",
        "| plain transformers 5.23.0, subprocess | pruned, standard export |",
        "generates the same 4 greedy tokens as the patched pruned model: yes.",
        "| Llama (tiny, seq 16, batch 2), both slimmings, sdpa | 3 |",
    ],
    "callback_overhead.py": [
        "| variant | step (ms) | ratio to the Trainer alone |",
        "| Trainer alone |",
        "| + EarlyBirdCallback: L1 + records |",
        "| + detection: slope (smooth 3, window 10, every 2) |",
        "| + detection: hamming (5 masks, every step) |",
    ],
}


def test_quick_pass_of_every_benchmark(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    pending = list(EXPECTED)
    running: dict[str, tuple[subprocess.Popen, Path]] = {}
    results = {}
    while pending or running:
        while pending and len(running) < 2:
            script = pending.pop(0)
            out = tmp_path / script.replace(".py", ".md")
            cmd = [sys.executable, str(ROOT / "bench" / script), "--quick", "--out", str(out)]
            if script in ("recorder_cost.py", "detector_cost.py", "image_pipeline.py"):
                cmd += ["--dir", str(tmp_path)]
            stdout = open(tmp_path / script.replace(".py", ".stdout"), "w")
            stderr = open(tmp_path / script.replace(".py", ".stderr"), "w")
            running[script] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr), out)
        for script, (proc, out) in list(running.items()):
            if proc.poll() is not None:
                results[script] = (proc.returncode, out)
                del running[script]
        time.sleep(0.2)
        if time.monotonic() - start > 600:
            for proc, _ in running.values():
                proc.kill()
            pytest.fail(f"benchmarks still running after 600 s: {sorted(running)}")
    for script, (code, out) in results.items():
        stderr = (tmp_path / script.replace(".py", ".stderr")).read_text()
        assert code == 0, f"{script} exited {code}:\n{stderr[-3000:]}"
        text = out.read_text()
        assert text.strip() in (tmp_path / script.replace(".py", ".stdout")).read_text()  # printed = written
        for expected in EXPECTED[script]:
            assert expected in text, f"{script}: no line with {expected!r} in\n{text}"
    # the recorder and detector benchmarks leave no records behind, the image benchmark no JPEGs
    scratch = ("eb-recorder-", "eb-detector-", "eb-images-")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(scratch)]
    assert not leftovers


def test_run_all_collects_every_benchmark():
    script = (ROOT / "bench" / "run_all.sh").read_text()
    for name in EXPECTED:
        assert f"bench/{name}" in script
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "run_all.sh")]).returncode == 0
