#!/usr/bin/env python
"""Fine-tune a pretrained ViT for image classification: with slimming, as a pruned ticket, or EB-Train.

    accelerate launch Finetuning/run_vit.py --model-name-or-path google/vit-base-patch16-224-in21k \
        --dataset imagenet-1k --output-dir runs/vit-slim --self-slimming --inter-slimming --l1-self 1e-4 ...

The flags shared by every entry point are in earlybird/training/args.py; see docs/training.md.
"""

import sys

from earlybird.training.args import EntryParser, common_parser
from earlybird.training.runner import run
from earlybird.training.tasks import add_vit_arguments, build_vit_task

PROG = "run_vit.py"


def build_parser():
    parser = EntryParser(prog=PROG, doc=__doc__, parents=[common_parser()])
    add_vit_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, args, build_vit_task)


if __name__ == "__main__":
    sys.exit(main())
