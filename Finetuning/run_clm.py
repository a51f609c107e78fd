#!/usr/bin/env python
"""Fine-tune a decoder LLM (Llama, Qwen3) as a causal language model on text: with slimming, as a pruned ticket, or
EB-Train.

    accelerate launch Finetuning/run_clm.py --model-name-or-path PATH --train-file corpus.txt --block-size 512 \
        --output-dir runs/clm-slim --self-slimming --inter-slimming --l1-self 1e-4 ...

The texts are tokenised, concatenated and cut into --block-size blocks; the metric is the validation loss and its
perplexity. Head masks keep the grouped-query attention rule (--gqa-rule). The flags shared by every entry point are
in earlybird/training/args.py; see docs/training.md.
"""

import sys

from earlybird.training.args import EntryParser, common_parser
from earlybird.training.runner import run
from earlybird.training.tasks import add_clm_arguments, build_clm_task

PROG = "run_clm.py"


def build_parser():
    parser = EntryParser(prog=PROG, doc=__doc__, parents=[common_parser()])
    add_clm_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, args, build_clm_task)


if __name__ == "__main__":
    sys.exit(main())
