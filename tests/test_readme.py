"""The README is part of the interface: its code blocks that run offline are run here, as written, at a tiny scale.

Each fenced ```bash block of README.md is split into commands (backslash continuations joined, comments dropped). The
commands of the programs below are run in-process, in a scratch directory, with the README's own arguments; the only
changes are the explicit ones in SCALE (fewer steps) and SUBSTITUTE (placeholders such as RUN, and what needs a
download: the pretrained MiniLM becomes a tiny BERT, SST-2 a tiny TSV). A block whose commands this test cannot run
(setup.sh, the full study, a plain-transformers machine, the two-minute Trainer example) is listed in NOT_RUN with the
reason; any other block with a command of these programs must run, so a README command that breaks, or a new one,
fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from clm_support import make_corpus, make_tiny_decoder
from test_training_support import ROOT, load_script, make_sentiment_tsv, make_tiny_bert, one_thread

PROGRAMS = {  # how a README command names a program -> how it is run here
    "ViT_pretraining/main.py": lambda: load_script("ViT_pretraining/main.py", "vit_pretraining_main").main,
    "Finetuning/run_bert.py": lambda: load_script("Finetuning/run_bert.py", "finetuning_run_bert").main,
    "Finetuning/run_vit.py": lambda: load_script("Finetuning/run_vit.py", "finetuning_run_vit").main,
    "Finetuning/run_clm.py": lambda: load_script("Finetuning/run_clm.py", "finetuning_run_clm").main,
    "earlybird": lambda: __import__("earlybird.cli", fromlist=["main"]).main,
}
# Appended to every command of a program (the digits default trains 360 steps).
SCALE = {
    "ViT_pretraining/main.py": ["--max-steps", "16", "--max-eval-samples", "64", "--disable-tqdm"],
    "Finetuning/run_bert.py": ["--max-steps", "4", "--disable-tqdm"],
    "Finetuning/run_clm.py": ["--max-steps", "12", "--block-size", "16", "--disable-tqdm"],
}
# The README's placeholders and steps at this scale (those of what the scratch directory holds: see `scratch`).
SUBSTITUTE = {
    "[TICKET_RUNS ...]": "runs/t72", "RUN": "runs/slim",  # (in this order: RUN is in TICKET_RUNS)
    "--step 2955": "--step 12", "--prune-step 72": "--prune-step 12", " [--random SEED]": "",
    "--eb-smooth 5 --eb-window 30 --eb-every 5": "--eb-smooth 2 --eb-window 10 --eb-every 2",
    "--method slope --json": "--method slope --json --smooth 2 --window 10 --every 2",
    "--method all": "--method all --smooth 2 --window 10 --every 2",
    "--step 400": "--step 8",
}
SKIPPED_COMMANDS = {  # a command of a block that runs -> why this test leaves it out
    "--format onnx": "the same export as the line before it, through ONNX (~25 s): tests/test_export.py runs it",
    "earlybird report": "the figures take ~20 s here: tests/test_report.py runs the report on runs",
}
NOT_RUN = {  # a line of the block -> why this test does not run it
    "bash setup.sh": "builds the environment this test runs in",
    "bash reproduce.sh": "the whole pipeline: tests/test_reproduce.py runs it (--smoke)",
    "study_sst2.bash": "the SST-2 study with a downloaded MiniLM, ~minutes",
    "trainer.train()": "the Trainer example needs the downloaded MiniLM (~2 minutes); tests/test_hf_callback.py runs "
                       "the same callback on a tiny BERT, and the ticket retrain command below runs on its output",
    "on a machine with plain transformers": "needs an unpatched transformers: tests/test_export.py runs it so",
    "from_pretrained(\"path/or/hub-id\"": "a sketch with a placeholder model",
}


def readme_blocks() -> list[tuple[int, str, str]]:
    """(line, language, text) of every fenced block of README.md."""
    blocks, lines = [], (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[i])
        if match:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append((i + 1, match.group(1), "\n".join(lines[i + 1:end])))
            i = end
        i += 1
    return blocks


def commands(text: str) -> list[str]:
    """The block's lines, continuations joined, comments (a # after whitespace or at the start) dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append(line)
    return out


def program_of(words: list[str]) -> str | None:
    for name in PROGRAMS:
        if name in words[:3] or (words and words[0].endswith("/" + name)):
            return name
    return None


def runnable_blocks() -> list[tuple[int, str]]:
    """(line, text) of the bash blocks with a command of PROGRAMS that NOT_RUN does not exclude."""
    found = []
    for line, language, text in readme_blocks():
        if any(marker in text for marker in NOT_RUN) or language != "bash":
            continue
        if any(program_of(shlex.split(command)) for command in commands(text)):
            found.append((line, text))
    return found


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The scratch directory the README's commands run in, with what the substitutions point at: a tiny BERT ($MODEL)
    and a tiny SST-2, and a Trainer run of the README's EarlyBirdCallback example on them (runs/sst2_trainer); a
    tiny Llama with its tokenizer ($MODEL unquoted, the decoder section's) and a small text (corpus.txt)."""
    root = tmp_path_factory.mktemp("readme")
    model = make_tiny_bert(root / "tiny-bert")
    sst2 = make_sentiment_tsv(root / "sst2")
    corpus = make_corpus(root / "corpus.txt")
    decoder = make_tiny_decoder(root / "tiny-llama", corpus=corpus)
    with one_thread():
        trainer_run(model, sst2, root / "runs" / "sst2_trainer")
    # ('"$MODEL"' first: the quoted one is the BERT section's)
    return root, {**SUBSTITUTE, "../shared/data/sst2": str(sst2), '"$MODEL"': str(model), "$MODEL": str(decoder)}


def trainer_run(model_dir, sst2, output_dir):
    """The README's Trainer example on the tiny BERT and SST-2 (settings that draw within 40 steps)."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from earlybird.hf import EarlyBirdCallback

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2, self_slimming=True,
                                                               inter_slimming=True)
    data = datasets.load_dataset("csv", delimiter="\t", quoting=3, data_files={"train": f"{sst2}/train.tsv"})
    data = data.map(lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=64), batched=True)
    callback = EarlyBirdCallback(l1_self=0.05, l1_inter=0.05, method="slope", smooth=3, window=10, every=2,
                                 stop_at_draw=True, save_ticket=True)
    trainer = Trainer(model=model, processing_class=tokenizer, callbacks=[callback], train_dataset=data["train"],
                      args=TrainingArguments(str(output_dir), max_steps=40, per_device_train_batch_size=8,
                                             learning_rate=0.05, optim="sgd", lr_scheduler_type="constant",
                                             use_cpu=True, save_strategy="no", report_to="none", disable_tqdm=True,
                                             seed=0))
    trainer.train()
    assert callback.draw_step is not None and (output_dir / "plan.json").is_file() and (output_dir / "ticket").is_dir()


def run_command(command: str, substitutions: dict) -> int | None:
    """Run one README command in-process; None for a line that is not a command of PROGRAMS (e.g. MODEL=...)."""
    for old, new in substitutions.items():
        command = command.replace(old, new)
    words = shlex.split(command)
    if words[:2] == ["mkdir", "-p"]:
        for path in words[2:]:
            Path(path).mkdir(parents=True, exist_ok=True)
        return 0
    name = program_of(words)
    if name is None:
        assert re.match(r"^\w+=", command), f"a README command this test does not know how to run: {command}"
        return None
    argv = words[words.index(name) + 1:] if name in words else words[1:]
    argv = [*argv, *SCALE.get(name, [])]
    with one_thread():
        return PROGRAMS[name]()(argv)


def test_the_readme_has_the_blocks_this_test_runs():
    texts = [text for _, text in runnable_blocks()]
    for expected in ("ViT_pretraining/main.py --output-dir runs/slim", "earlybird detect RUN/records",
                     "earlybird export runs/t72", "Finetuning/run_bert.py --task glue", "Finetuning/run_clm.py"):
        assert any(expected in text for text in texts), expected


def test_every_runnable_readme_block_runs(scratch, monkeypatch, capsys):
    root, substitutions = scratch
    monkeypatch.chdir(root)
    # the training commands first: the `earlybird` blocks read their runs
    for line, text in sorted(runnable_blocks(), key=lambda block: "earlybird " in block[1].split("\n")[0]):
        for command in commands(text):
            if any(marker in command for marker in SKIPPED_COMMANDS):
                continue
            code = run_command(command, substitutions)
            output = capsys.readouterr()
            assert code in (None, 0), f"README.md line {line}: `{command}` exited {code}: {output.err[-2000:]}"
    # what the blocks promise
    assert (root / "runs" / "t72" / "results.json").is_file() and (root / "runs" / "eb" / "ebtrain.json").is_file()
    assert (root / "deploy" / "t72" / "config.json").is_file()
    assert (root / "runs" / "sst2_ticket" / "results.json").is_file()
    assert (root / "runs" / "clm_ticket" / "results.json").is_file() and (root / "runs" / "clm_eb" / "results.json").is_file()
    assert (root / "llama_ticket" / "config.json").is_file()


def test_without_its_model_the_retrain_command_fails_at_once_in_one_line(scratch, monkeypatch, capsys):
    """No --init-checkpoint and no --model-name-or-path: the study's hub model, which offline (HF_HUB_OFFLINE=1) is
    one line naming the model and the variable, before any data is read -- not ~25 s of retries."""
    import time

    root, substitutions = scratch
    monkeypatch.chdir(root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    code = run_command(f".venv/bin/python Finetuning/run_bert.py --task glue --train-file {root}/sst2/train.tsv "
                       "--output-dir runs/no-model", {})
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and time.perf_counter() - start < 5
    assert line == ("run_bert.py: error: --model-name-or-path bert-base-uncased: cannot load a model config: not a "
                    "local directory, and the hub is off (HF_HUB_OFFLINE=1) with no cached copy; expected a local "
                    "model directory")
    assert not (root / "runs" / "no-model").exists()
