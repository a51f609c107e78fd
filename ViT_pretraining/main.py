#!/usr/bin/env python
"""Train a small ViT from scratch (the patched ViTConfig) on CIFAR-10 or the embedded digits (the default):
with slimming, as a pruned ticket, or EB-Train.

    accelerate launch ViT_pretraining/main.py --output-dir runs/digits-slim --self-slimming --l1-self 1e-4

Defaults follow the data set: the study's 7-layer, 384-wide ViT with patch 4 for CIFAR-10, and a
scaled-down one for digits (image 8, patch 2, 4 layers, hidden 64). See docs/training.md.
"""

import sys

from earlybird.errors import EarlyBirdError
from earlybird.training.args import EntryParser, common_parser, fail
from earlybird.training.runner import run
from earlybird.training.tasks import add_pretrain_arguments, build_pretrain_task, fill_pretrain_defaults

PROG = "main.py"


def build_parser():
    parser = EntryParser(prog=PROG, doc=__doc__, parents=[common_parser()])
    add_pretrain_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        fill_pretrain_defaults(args)
    except EarlyBirdError as err:
        return fail(PROG, err)
    return run(PROG, args, build_pretrain_task)


if __name__ == "__main__":
    sys.exit(main())
