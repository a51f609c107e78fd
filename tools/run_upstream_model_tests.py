"""Run transformers' own Llama and Qwen3 model tests with the patch's features on (docs/patch.md, "Llama and Qwen3").

    .venv/bin/python tools/run_upstream_model_tests.py ROOT [--pristine DIR] [--pythonpath DIR] [--timeout S] [-k EXPR]

ROOT holds a transformers test tree assembled outside this repository (upstream code stays out of it):
`ROOT/tests/` = the 5.23.0 sdist's `tests/` plus transformers' `tests/causal_lm_tester.py` and
`tests/models/{llama,qwen3}/test_modeling_*.py` (and `__init__.py` files). This script adds our variants beside each
model file (`test_eb_variants.py`: GQA, Slim, Pruned subclasses of the upstream tester and test class), points
`ROOT/src/transformers` (read by `test_pipeline_mixin.py`) at the installed, patched package, runs pytest without `-x`
and with `-k "not slow"`, and prints per test class the passed / failed / skipped counts and the failed tests' names.
With `--pristine DIR` (a directory holding the unpatched 5.23.0 `transformers`, put first on `PYTHONPATH`), it first
runs the baseline: the upstream classes and `GQA` (the Slim and Pruned flags do not exist there).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import transformers

MODELS = {"llama": "Llama", "qwen3": "Qwen3"}

VARIANTS = '''"""earlybird's feature-on variants of transformers' own {Model} tests.

Written by earlybird's tools/run_upstream_model_tests.py.
"""

from . import test_modeling_{model} as upstream


class GQATester(upstream.{Model}ModelTester):
    """4 query heads over 2 key/value heads (hidden 32, head_dim 8)."""

    def __init__(self, parent, **kwargs):
        kwargs.update(num_attention_heads=4, num_key_value_heads=2)
        super().__init__(parent, **kwargs)


class SlimTester(GQATester):
    def get_config(self):
        config = super().get_config()
        config.self_slimming = True
        config.inter_slimming = True
        return config


class PrunedTester(SlimTester):
    """Layer 0 loses key/value group 1, layer 1 one query head of each group (the GQA rule holds)."""

    def get_config(self):
        config = super().get_config()
        config.pruned_heads = {{"0": [2, 3], "1": [0, 2]}}
        config.pruned_intermediate = {{"1": [0, 5]}}
        return config


class {Model}GQATest(upstream.{Model}ModelTest):
    model_tester_class = GQATester


class {Model}SlimTest(upstream.{Model}ModelTest):
    model_tester_class = SlimTester


class {Model}PrunedTest(upstream.{Model}ModelTest):
    model_tester_class = PrunedTester
'''


def write_variants(root: Path) -> None:
    for model, name in MODELS.items():
        folder = root / "tests" / "models" / model
        if not (folder / f"test_modeling_{model}.py").is_file():
            sys.exit(f"error: {folder}/test_modeling_{model}.py: expected transformers' own {name} test file")
        (folder / "test_eb_variants.py").write_text(VARIANTS.format(model=model, Model=name))


def point_src(root: Path, package: Path) -> None:
    link = root / "src" / "transformers"
    link.parent.mkdir(exist_ok=True)
    if link.is_symlink():
        link.unlink()
    link.symlink_to(package)


def per_class(junit: Path) -> dict[str, tuple[collections.Counter, list[str]]]:
    """{test class: (counts of passed/failed/skipped, names of the failed tests)} from pytest's JUnit XML."""
    result = collections.defaultdict(lambda: (collections.Counter(), []))
    for case in ET.parse(junit).getroot().iter("testcase"):
        counts, failed = result[case.get("classname").rsplit(".", 1)[-1]]
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
                failed.append(case.get("name"))
            elif child.tag == "skipped":
                outcome = "skipped"
        counts[outcome] += 1
    return dict(result)


def run(root: Path, label: str, pythonpath: list[str], keyword: str, timeout: int) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(pythonpath))
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "tests/models/llama", "tests/models/qwen3", "-q",
                   "-p", "no:cacheprovider", "-p", "no:randomly", "-o", "addopts=", "-W", "ignore", "-rf",
                   "-k", keyword, f"--junitxml={junit}"]
        completed = subprocess.run(command, cwd=root, env=env, timeout=timeout, capture_output=True, text=True)
        if not junit.is_file():
            sys.exit(f"error: pytest wrote no results ({label}):\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}")
        print(f"== {label}: {completed.stdout.strip().splitlines()[-1]}")
        for name, (counts, failed) in sorted(per_class(junit).items()):
            summary = ", ".join(f"{counts[k]} {k}" for k in ("failed", "passed", "skipped") if counts[k])
            print(f"{name}: {summary}" + (f"; failed: {', '.join(sorted(failed))}" if failed else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="directory holding the assembled tests/ tree")
    parser.add_argument("--pristine", type=Path, help="directory holding the unpatched 5.23.0 transformers package")
    parser.add_argument("--pythonpath", action="append", default=[], help="extra PYTHONPATH entry (e.g. parameterized)")
    parser.add_argument("--timeout", type=int, default=3000, help="seconds per pytest run")
    parser.add_argument("-k", dest="keyword", help="a further pytest -k expression, ANDed with the runs' own")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    further = f" and ({args.keyword})" if args.keyword else ""
    write_variants(root)
    if args.pristine is not None:
        if not (args.pristine / "transformers" / "__init__.py").is_file():
            sys.exit(f"error: --pristine {args.pristine}: expected a directory holding transformers/__init__.py")
        point_src(root, args.pristine.resolve() / "transformers")
        run(root, "unpatched", [str(args.pristine.resolve()), *args.pythonpath],
            "not slow and not SlimTest and not PrunedTest" + further, args.timeout)
    point_src(root, Path(transformers.__file__).parent)
    run(root, "patched", args.pythonpath, "not slow" + further, args.timeout)


if __name__ == "__main__":
    main()
