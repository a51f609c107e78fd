"""The patch set: diffs agree with the modified files, and apply / check / revert never half-patch."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from earlybird import transformers_patch as tp

REPO = Path(__file__).resolve().parents[1]
BERT_MODELING = "models/bert/modeling_bert.py"


def run_tool(*args):
    return subprocess.run(
        [sys.executable, "-m", "earlybird.transformers_patch", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"EARLYBIRD_SKIP_PATCH_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def fake_transformers(tmp_path, pristine_dir):
    """A pristine transformers 5.23.0 package folder holding just the target files."""
    package = tmp_path / "transformers"
    for target in tp.TARGETS:
        (package / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(pristine_dir / target, package / target)
    (package / "__init__.py").write_text(f'__version__ = "{tp.TRANSFORMERS_VERSION}"\n')
    return package


def snapshot(package):
    return {target: (package / target).read_bytes() for target in tp.TARGETS}


def test_patches_are_the_diffs_of_the_modified_files_byte_for_byte(pristine_dir):
    for target, text in tp.expected_patches(pristine_dir).items():
        assert (tp.PATCH_DIR / tp.patch_name(target)).read_text() == text, f"regenerate {tp.patch_name(target)}"
    manifest = json.loads(tp.MANIFEST.read_text())
    assert set(manifest["files"]) == set(tp.TARGETS)
    for target, sums in manifest["files"].items():
        assert sums["patched"] == tp.sha256(tp.MODIF_DIR / target)
        assert sums["pristine"] == tp.sha256(pristine_dir / target)


def test_the_installed_transformers_is_patched():
    result = subprocess.run(["bash", str(REPO / "setup.sh"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": patched")


def test_apply_check_revert_on_a_copy(fake_transformers):
    pristine = snapshot(fake_transformers)
    check = run_tool("status", "--transformers-dir", str(fake_transformers))
    assert check.returncode == 1 and check.stdout.strip().endswith(": pristine")

    applied = run_tool("apply", "--transformers-dir", str(fake_transformers))
    assert applied.returncode == 0, applied.stderr
    for target in tp.TARGETS:  # applying the diffs to pristine files gives the modified files, byte for byte
        assert (fake_transformers / target).read_bytes() == (tp.MODIF_DIR / target).read_bytes()
    check = run_tool("status", "--transformers-dir", str(fake_transformers))
    assert check.returncode == 0 and check.stdout.strip().endswith(": patched")
    again = run_tool("apply", "--transformers-dir", str(fake_transformers))
    assert again.returncode == 0 and "already patched" in again.stdout

    reverted = run_tool("revert", "--transformers-dir", str(fake_transformers))
    assert reverted.returncode == 0, reverted.stderr
    assert snapshot(fake_transformers) == pristine
    assert not (fake_transformers / tp.STAGING).exists() and not (fake_transformers / tp.JOURNAL).exists()


def test_an_earlier_patch_set_is_replaced_and_a_hand_edit_is_not(fake_transformers):
    """A user who pulls a new version of the project re-runs setup.sh over the files an earlier version patched: they
    are replaced from the pristine backup (what apply recorded installing tells them from hand edits)."""
    pristine = snapshot(fake_transformers)
    assert run_tool("apply", "--transformers-dir", str(fake_transformers)).returncode == 0
    target = fake_transformers / BERT_MODELING
    # what an earlier version of the patches would have installed, and recorded as installed
    target.write_text(target.read_text().replace("class BertLayer", "class BertLayerOfAnEarlierPatch"))
    installed = fake_transformers / tp.BACKUP / tp.INSTALLED
    record = json.loads(installed.read_text())
    installed.write_text(json.dumps({**record, BERT_MODELING: tp.sha256(target)}))
    status = run_tool("status", "--transformers-dir", str(fake_transformers))
    assert status.returncode == 1 and "an earlier patch set of this project" in status.stdout

    upgraded = run_tool("apply", "--transformers-dir", str(fake_transformers))
    assert upgraded.returncode == 0 and "replacing an earlier patch set" in upgraded.stdout, upgraded.stderr
    for name in tp.TARGETS:
        assert (fake_transformers / name).read_bytes() == (tp.MODIF_DIR / name).read_bytes()
        assert (fake_transformers / tp.BACKUP / name).read_bytes() == pristine[name]  # the backup is still pristine

    target.write_text(target.read_text().replace("class BertLayer", "class BertLayerEditedByHand"))
    before = snapshot(fake_transformers)
    refused = run_tool("apply", "--transformers-dir", str(fake_transformers))
    assert refused.returncode == 2 and "not a pristine transformers" in refused.stderr
    assert snapshot(fake_transformers) == before


def test_a_venv_patched_before_llama_and_qwen3_joined_the_patch_set_is_upgraded(fake_transformers):
    """An install patched by the ViT/BERT-only patch set: its backup and record hold those files only, the decoder
    files are pristine. `apply` (setup.sh) patches them too and backs them up; `revert` restores all of them."""
    pristine = snapshot(fake_transformers)
    older = [t for t in tp.TARGETS if t.startswith(("models/vit/", "models/bert/"))]
    assert len(older) == 4 and len(tp.TARGETS) == 8
    backup = fake_transformers / tp.BACKUP
    for target in older:
        (backup / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fake_transformers / target, backup / target)
        shutil.copy2(tp.MODIF_DIR / target, fake_transformers / target)
    tp.write_installed(backup, {t: tp.sha256(tp.MODIF_DIR / t) for t in older})
    status = run_tool("status", "--transformers-dir", str(fake_transformers))
    assert status.returncode == 1 and "an earlier patch set of this project" in status.stdout

    upgraded = run_tool("apply", "--transformers-dir", str(fake_transformers))
    assert upgraded.returncode == 0 and "replacing an earlier patch set" in upgraded.stdout, upgraded.stderr
    for name in tp.TARGETS:
        assert (fake_transformers / name).read_bytes() == (tp.MODIF_DIR / name).read_bytes()
        assert (backup / name).read_bytes() == pristine[name]
    assert run_tool("status", "--transformers-dir", str(fake_transformers)).returncode == 0
    assert run_tool("revert", "--transformers-dir", str(fake_transformers)).returncode == 0
    assert snapshot(fake_transformers) == pristine


def test_an_older_install_with_a_hand_edited_new_target_is_refused(fake_transformers):
    older = [t for t in tp.TARGETS if t.startswith(("models/vit/", "models/bert/"))]
    backup = fake_transformers / tp.BACKUP
    for target in older:
        (backup / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fake_transformers / target, backup / target)
        shutil.copy2(tp.MODIF_DIR / target, fake_transformers / target)
    tp.write_installed(backup, {t: tp.sha256(tp.MODIF_DIR / t) for t in older})
    llama = fake_transformers / "models/llama/modeling_llama.py"
    llama.write_text(llama.read_text().replace("class LlamaMLP", "class LlamaMLPEdited"))
    before = snapshot(fake_transformers)
    refused = run_tool("apply", "--transformers-dir", str(fake_transformers))
    assert refused.returncode == 2 and "models/llama/modeling_llama.py (other)" in refused.stderr
    assert snapshot(fake_transformers) == before


def test_a_mismatched_file_is_refused_and_nothing_changes(fake_transformers):
    target = fake_transformers / BERT_MODELING
    target.write_text(target.read_text().replace("class BertLayer", "class BertLayerEdited"))
    before = snapshot(fake_transformers)
    result = run_tool("apply", "--transformers-dir", str(fake_transformers))
    assert result.returncode == 2
    assert BERT_MODELING in result.stderr and "Nothing was changed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(fake_transformers) == before
    check = run_tool("status", "--transformers-dir", str(fake_transformers))
    assert check.returncode == 1 and ": other" in check.stdout.splitlines()[0]
    assert f"  {BERT_MODELING}: other" in check.stdout.splitlines()


def test_another_transformers_version_is_refused(fake_transformers):
    (fake_transformers / "__init__.py").write_text('__version__ = "5.24.0"\n')
    before = snapshot(fake_transformers)
    result = run_tool("apply", "--transformers-dir", str(fake_transformers))
    assert result.returncode == 2 and "5.24.0" in result.stderr and "5.23.0" in result.stderr
    assert snapshot(fake_transformers) == before


def test_a_diff_that_does_not_apply_is_refused(fake_transformers, monkeypatch, tmp_path):
    broken = tmp_path / "patches"
    shutil.copytree(tp.PATCH_DIR, broken)
    diff = broken / tp.patch_name(tp.TARGETS[1])
    lines = diff.read_text().splitlines(keepends=True)
    removed = next(i for i, line in enumerate(lines) if line.startswith("-") and not line.startswith("---"))
    lines[removed] = "-# a line that the pristine file does not have\n"
    diff.write_text("".join(lines))
    monkeypatch.setattr(tp, "PATCH_DIR", broken)
    before = snapshot(fake_transformers)
    with pytest.raises(tp.PatchError, match="does not apply cleanly"):
        tp.apply(fake_transformers)
    assert snapshot(fake_transformers) == before
    assert not (fake_transformers / tp.STAGING).exists()


def test_an_interrupted_swap_is_rolled_forward(fake_transformers, monkeypatch):
    """A kill between two renames of the swap: the journal lets the next run finish it."""
    calls = []
    real_replace = tp.os.replace

    def dying_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # the journal, then one target file: die before the second one
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(tp.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        tp.apply(fake_transformers)
    monkeypatch.setattr(tp.os, "replace", real_replace)
    states = set(tp.file_states(fake_transformers, tp.load_manifest()).values())
    assert states == {"pristine", "patched"}  # the half-way state the journal exists for
    state, _ = tp.overall_state(fake_transformers)  # any later check rolls it forward
    assert state == "patched"
    for target in tp.TARGETS:
        assert (fake_transformers / target).read_bytes() == (tp.MODIF_DIR / target).read_bytes()


def test_setup_sh_rejects_unknown_options():
    result = subprocess.run(["bash", str(REPO / "setup.sh"), "--frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "--frobnicate" in result.stderr
