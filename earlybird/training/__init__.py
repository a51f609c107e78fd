"""Training: the shared flags, the run directory, the one training loop, tickets and EB-Train.

Entry points (Finetuning/run_vit.py, Finetuning/run_bert.py, ViT_pretraining/main.py) parse
`args.common_parser()` plus their own flags and call `runner.run(prog, args, build_task)`.
See docs/training.md.
"""
