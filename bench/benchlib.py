"""What every benchmark script shares: its command line (--quick, --threads, --out) and how it hands over its table.

Imported by the scripts in this folder (`python bench/<name>.py` puts the folder first on sys.path).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def make_parser(doc: str, quick_help: str, threads: bool = True) -> argparse.ArgumentParser:
    """The parser of a benchmark: its description is the first line of the script's docstring."""
    parser = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if threads:
        parser.add_argument("--threads", type=int, default=0,
                            help="torch threads (default 0: torch's; quick: 1); 1 is steadiest on a shared machine")
    parser.add_argument("--out", help="also write the markdown to this file")
    return parser


def set_threads(args) -> None:
    """--threads N, or one thread for a quick pass (two subprocesses share two cores in the test suite)."""
    if getattr(args, "threads", 0) or args.quick:
        import torch

        torch.set_num_threads(args.threads or 1)


def emit(text: str, args) -> int:
    """Print the markdown and write it to --out; the exit status of a finished benchmark."""
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def bert_train_step_seconds(model, repeats: int) -> float:
    """Median seconds of a train step (forward, backward, AdamW) of a BERT classifier at batch 8 x 128, after one
    untimed step: the yardstick the per-step costs of the recorder and the callback are put against."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    inputs = {"input_ids": torch.randint(0, 1000, (8, 128)), "labels": torch.randint(0, 2, (8,))}
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])
