"""Patch safety: `transformers_patch apply` (what setup.sh runs) SIGKILLed at every step of staging, backing
up and swapping leaves transformers pristine or -- after the roll-forward any later status, apply or
`import earlybird` does -- fully patched; and an upgraded transformers is reported at `import earlybird`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from earlybird import transformers_patch as tp

REPO = Path(__file__).resolve().parents[1]


def tool(*args, fault=None):
    env = {"EARLYBIRD_SKIP_PATCH_CHECK": "1", "PATH": "/usr/bin:/bin"}
    if fault:
        env["EARLYBIRD_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "earlybird.transformers_patch", *args], capture_output=True,
                          text=True, cwd=REPO, env=env)


@pytest.fixture
def package(tmp_path, pristine_dir):
    """A pristine transformers 5.23.0 package folder (just the target files), importable from tmp_path."""
    target_dir = tmp_path / "transformers"
    for target in tp.TARGETS:
        (target_dir / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(pristine_dir / target, target_dir / target)
    (target_dir / "__init__.py").write_text(f'__version__ = "{tp.TRANSFORMERS_VERSION}"\n')
    return target_dir


def contents(package):
    return {target: (package / target).read_bytes() for target in tp.TARGETS}


PATCHED = {target: (tp.MODIF_DIR / target).read_bytes() for target in tp.TARGETS}
FILES = len(tp.TARGETS)
# (point, n): where the kill lands, and the state a later `status` must find
KILLS = ([("patch-stage", n, "pristine") for n in range(1, FILES + 1)]
         + [("patch-backup", n, "pristine") for n in range(1, FILES + 1)]
         + [("patch-swap", n, "patched") for n in range(1, FILES + 2)])  # n=1: journal written, nothing swapped yet


@pytest.mark.parametrize("point, n, state", KILLS, ids=[f"{p}@{n}" for p, n, _ in KILLS])
def test_apply_killed_anywhere_is_pristine_or_patched(point, n, state, package):
    pristine = contents(package)
    killed = tool("apply", "--transformers-dir", str(package), fault=f"{point}:kill@{n}")
    assert killed.returncode == -9, killed.stderr
    status = tool("status", "--transformers-dir", str(package))
    assert status.stdout.strip().endswith(f": {state}"), status.stdout
    assert contents(package) == (PATCHED if state == "patched" else pristine)
    assert not (package / tp.JOURNAL).exists() and not (package / tp.STAGING).exists()
    again = tool("apply", "--transformers-dir", str(package))  # setup.sh run again: finishes the job
    assert again.returncode == 0, again.stderr
    assert contents(package) == PATCHED
    assert tool("status", "--transformers-dir", str(package)).returncode == 0


def import_earlybird(package):
    """`import earlybird` in a fresh interpreter that finds `package` as its transformers."""
    env = {k: v for k, v in os.environ.items() if k not in ("EARLYBIRD_SKIP_PATCH_CHECK", "EARLYBIRD_FAULT")}
    env["PYTHONPATH"] = str(package.parent)
    return subprocess.run([sys.executable, "-c", "import transformers, earlybird; print(transformers.__file__)"],
                          capture_output=True, text=True, cwd=REPO, env=env)


def test_a_swap_killed_midway_is_finished_by_import_earlybird(package):
    assert tool("apply", "--transformers-dir", str(package), fault="patch-swap:kill@3").returncode == -9
    assert contents(package) != PATCHED  # half swapped
    result = import_earlybird(package)
    assert result.returncode == 0 and result.stdout.strip() == str(package / "__init__.py")
    assert "earlybird:" not in result.stderr, result.stderr  # rolled forward: patched, nothing to warn about
    assert contents(package) == PATCHED


@pytest.mark.parametrize("change, state", [("upgrade", "other"), ("reinstall", "pristine")])
def test_a_transformers_changed_behind_our_back_is_reported_at_import(change, state, package):
    assert tool("apply", "--transformers-dir", str(package)).returncode == 0
    if change == "upgrade":  # pip install -U transformers: a new version, new files
        (package / "__init__.py").write_text('__version__ = "5.24.0"\n')
        (package / tp.TARGETS[1]).write_text("# the next release's modeling_vit.py\n")
    else:  # pip install --force-reinstall transformers==5.23.0: the patch is gone
        for target in tp.TARGETS:
            shutil.copy2(package / tp.BACKUP / target, package / target)
    result = import_earlybird(package)
    assert result.returncode == 0  # a warning, not a crash: the library parts that need no patch still work
    assert f"earlybird: the installed transformers is {state}, not the patched 5.23.0" in result.stderr, result.stderr
    assert "re-run `bash setup.sh`" in result.stderr
