#!/usr/bin/env python
"""Fine-tune BERT on SQuAD v1.1 (--task squad) or GLUE-style classification (--task glue): with slimming,
as a pruned ticket, or EB-Train.

    accelerate launch Finetuning/run_bert.py --model-name-or-path bert-base-uncased --task squad \
        --output-dir runs/bert-slim --self-slimming --inter-slimming --l1-self 1e-4 ...

The flags shared by every entry point are in earlybird/training/args.py; see docs/training.md.
"""

import sys

from earlybird.training.args import EntryParser, common_parser
from earlybird.training.runner import run
from earlybird.training.tasks import add_bert_arguments, build_bert_task

PROG = "run_bert.py"


def build_parser():
    parser = EntryParser(prog=PROG, doc=__doc__, parents=[common_parser()])
    add_bert_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, args, build_bert_task)


if __name__ == "__main__":
    sys.exit(main())
