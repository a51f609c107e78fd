"""Apply, check, revert and regenerate the patch set over Hugging Face Transformers.

`transformers_modif_files/` (the full modified files) is the source of truth; `patches/*.diff` are unified diffs
against pristine transformers 5.23.0 regenerated from it (`regen`), and `patches/manifest.json` records the SHA-256 of
every target file pristine and patched, so a file's state is known by its hash alone.

Applying never leaves transformers half-patched: the pristine files are patched as copies in a staging folder, the
copies are checked against the manifest, and only then swapped in, under a journal that a later run rolls forward if
the swap itself was interrupted (SIGINT/SIGTERM are held off during the swap; a SIGKILL there is finished by the next
`setup.sh`, `--check` or `import earlybird`).

Standard library only: it runs before anything else is importable.

    python -m earlybird.transformers_patch status|apply|revert [--transformers-dir DIR]
    python -m earlybird.transformers_patch regen [--pristine DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from . import faults  # test-only kill points (standard library, inert unless EARLYBIRD_FAULT is set)
from .fileio import fsync_file

TRANSFORMERS_VERSION = "5.23.0"
TARGETS = (
    "models/vit/configuration_vit.py",
    "models/vit/modeling_vit.py",
    "models/bert/configuration_bert.py",
    "models/bert/modeling_bert.py",
    "models/llama/configuration_llama.py",
    "models/llama/modeling_llama.py",
    "models/qwen3/configuration_qwen3.py",
    "models/qwen3/modeling_qwen3.py",
)
REPO = Path(__file__).resolve().parents[1]
MODIF_DIR = REPO / "transformers_modif_files"
PATCH_DIR = REPO / "patches"
MANIFEST = PATCH_DIR / "manifest.json"
JOURNAL = ".earlybird-patch-journal.json"
STAGING = ".earlybird-staging"
BACKUP = ".earlybird-pristine"
INSTALLED = "installed.json"  # in BACKUP: the hashes of the patched files last installed


class PatchError(RuntimeError):
    """The patch set cannot be applied, checked or reverted; the message says why and what to do."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def patch_name(target: str) -> str:
    return Path(target).name.replace(".py", ".diff")


def installed_transformers_dir() -> Path:
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        raise PatchError("transformers is not installed in this Python environment: run `bash setup.sh`.")
    return Path(spec.origin).parent


def transformers_version(package_dir: Path) -> str:
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', (package_dir / "__init__.py").read_text(), re.M)
    return match.group(1) if match else "unknown"


def load_manifest() -> dict:
    try:
        return json.loads(MANIFEST.read_text())
    except (OSError, ValueError) as err:
        raise PatchError(f"{MANIFEST}: unreadable patch manifest ({err}); run `regen`.") from err


def file_states(package_dir: Path, manifest: dict) -> dict[str, str]:
    """'pristine', 'patched', 'missing' or 'other' for each target file."""
    states = {}
    for target, sums in manifest["files"].items():
        path = package_dir / target
        if not path.exists():
            states[target] = "missing"
            continue
        digest = sha256(path)
        states[target] = {sums["pristine"]: "pristine", sums["patched"]: "patched"}.get(digest, "other")
    return states


def overall_state(package_dir: Path) -> tuple[str, dict[str, str]]:
    """'patched', 'pristine' or 'other' (another version, a mix, or edited files), with the per-file states."""
    manifest = load_manifest()
    recover(package_dir, manifest)
    version = transformers_version(package_dir)
    states = file_states(package_dir, manifest)
    if version != manifest["transformers_version"]:
        return "other", {**states, "__init__.py": f"version {version}, expected {manifest['transformers_version']}"}
    values = set(states.values())
    if values == {"patched"}:
        return "patched", states
    if values == {"pristine"}:
        return "pristine", states
    return "other", states


@contextlib.contextmanager
def signals_held():
    """Defer SIGINT/SIGTERM until the swap is done, so a Ctrl-C cannot stop it half-way."""
    received = []
    handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            handlers[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if received:
            os.kill(os.getpid(), received[0])


def swap_in(package_dir: Path, staged: dict[str, Path], expected: dict[str, str]):
    """Move verified staged files over the targets under a journal; `recover` finishes an interrupted swap."""
    for target, path in staged.items():
        if sha256(path) != expected[target]:
            raise PatchError(f"{target}: staged file does not match the manifest; transformers left untouched.")
        fsync_file(path)
    journal = package_dir / JOURNAL
    tmp = journal.with_suffix(".tmp")
    tmp.write_text(json.dumps({t: {"staged": str(p), "sha256": expected[t]} for t, p in staged.items()}))
    fsync_file(tmp)
    with signals_held():
        os.replace(tmp, journal)
        finish_swap(package_dir, json.loads(journal.read_text()))


def finish_swap(package_dir: Path, entries: dict):
    for target, entry in entries.items():
        staged = Path(entry["staged"])
        faults.hit("patch-swap")
        if staged.exists():
            os.replace(staged, package_dir / target)
    faults.hit("patch-swap")
    (package_dir / JOURNAL).unlink(missing_ok=True)
    shutil.rmtree(package_dir / STAGING, ignore_errors=True)


def recover(package_dir: Path, manifest: dict):
    """Roll an interrupted swap forward: every staged file was verified before the journal was written."""
    journal = package_dir / JOURNAL
    if journal.exists():
        entries = json.loads(journal.read_text())
        with signals_held():
            finish_swap(package_dir, entries)
    else:
        shutil.rmtree(package_dir / STAGING, ignore_errors=True)
        (package_dir / (JOURNAL.replace(".json", ".tmp"))).unlink(missing_ok=True)


def apply(package_dir: Path) -> str:
    manifest = load_manifest()
    state, states = overall_state(package_dir)
    if state == "patched":
        if (package_dir / BACKUP).is_dir() and not (package_dir / BACKUP / INSTALLED).exists():
            # (an install patched before the record existed: a later patch set will recognise these files)
            write_installed(package_dir / BACKUP, {t: sums["patched"] for t, sums in manifest["files"].items()})
        return f"transformers {TRANSFORMERS_VERSION} at {package_dir} is already patched; nothing to do."
    version = transformers_version(package_dir)
    if version != manifest["transformers_version"]:
        raise PatchError(
            f"{package_dir}: transformers {version} is installed but the patches are for "
            f"{manifest['transformers_version']}; run `bash setup.sh` to install the pinned version. Nothing was changed."
        )
    backup = package_dir / BACKUP
    earlier = state != "pristine" and earlier_patch(package_dir, manifest, states)
    if state != "pristine" and not earlier:
        bad = ", ".join(f"{t} ({s})" for t, s in states.items() if s != "pristine")
        raise PatchError(
            f"{package_dir}: not a pristine transformers {version}: {bad}. Nothing was changed; reinstall transformers "
            f"(`.venv/bin/pip install --force-reinstall --no-deps transformers=={version}`) and re-run `bash setup.sh`."
        )
    if shutil.which("patch") is None:
        raise PatchError("GNU `patch` is not installed (apt-get install patch); nothing was changed.")
    staging = package_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    for target in manifest["files"]:
        # an earlier patch set is replaced from the pristine backup; a file it did not patch is still pristine here
        source = backup if earlier and (backup / target).is_file() else package_dir
        (staging / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / target, staging / target)
    for target in manifest["files"]:
        diff = PATCH_DIR / patch_name(target)
        result = subprocess.run(
            ["patch", "--batch", "--forward", "--fuzz=0", "--silent", "-p1", "-d", str(staging), "-i", str(diff)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise PatchError(f"{diff}: does not apply cleanly ({result.stdout.strip()}); nothing was changed.")
        faults.hit("patch-stage")
    for target in manifest["files"]:
        if not earlier or not (backup / target).is_file():  # back up the files an earlier patch set did not patch
            (backup / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(package_dir / target, backup / target)
            faults.hit("patch-backup")
    patched = {t: sums["patched"] for t, sums in manifest["files"].items()}
    swap_in(package_dir, {t: staging / t for t in manifest["files"]}, patched)
    write_installed(backup, patched)
    return (f"patched transformers {version} at {package_dir} ({len(manifest['files'])} files)"
            + (", replacing an earlier patch set of this project." if earlier else "."))


def write_installed(backup: Path, patched: dict[str, str]) -> None:
    """Record, beside the pristine backup, the hashes of the files this patch set installed: a later version of the
    patches recognises them as its own earlier patch (not hand edits) and replaces them."""
    path = backup / INSTALLED
    path.write_text(json.dumps(patched, indent=1, sort_keys=True) + "\n")


def earlier_patch(package_dir: Path, manifest: dict, states: dict[str, str]) -> bool:
    """Whether the installed files are an earlier patch set of this project (every file pristine, patched, or as an
    earlier `apply` recorded it installing) over a valid pristine backup: then `apply` replaces it from the backup. A
    file that the earlier patch set did not patch (a model added since) is pristine and has no backup yet."""
    backup = package_dir / BACKUP
    try:
        installed = json.loads((backup / INSTALLED).read_text())
    except (OSError, ValueError):
        return False
    for target, sums in manifest["files"].items():
        if not (backup / target).is_file():
            if states.get(target) != "pristine" or target in installed:
                return False
            continue
        if sha256(backup / target) != sums["pristine"]:
            return False
        if states.get(target) == "other" and sha256(package_dir / target) != installed.get(target):
            return False  # edited by hand, or of another origin
    return True


def revert(package_dir: Path) -> str:
    manifest = load_manifest()
    state, states = overall_state(package_dir)
    if state == "pristine":
        return f"transformers at {package_dir} is already pristine; nothing to do."
    backup = package_dir / BACKUP
    pristine = {t: sums["pristine"] for t, sums in manifest["files"].items()}
    earlier = earlier_patch(package_dir, manifest, states)
    to_restore = [t for t in manifest["files"] if states.get(t) != "pristine"]
    for target in to_restore:
        if states.get(target) != "patched" and not earlier:
            raise PatchError(f"{package_dir / target}: edited by hand ({states.get(target)}); reinstall transformers.")
        if not (backup / target).exists() or sha256(backup / target) != pristine[target]:
            raise PatchError(f"{backup / target}: no valid pristine backup; reinstall transformers instead.")
    staging = package_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    for target in to_restore:
        (staging / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(backup / target, staging / target)
    swap_in(package_dir, {t: staging / t for t in to_restore}, pristine)
    return f"restored the pristine transformers files at {package_dir}."


def import_pristine_modeling(model: str):
    """Import the *unpatched* 5.23.0 `modeling_<model>` ('vit', 'bert', 'llama', 'qwen3') kept by `apply`, beside the
    patched one.

    For equivalence tests and benchmarks against the original model. It shares the (patched, superset) config class.
    """
    name = f"transformers.models.{model}._pristine_modeling_{model}"
    if name in sys.modules:
        return sys.modules[name]
    path = installed_transformers_dir() / BACKUP / f"models/{model}/modeling_{model}.py"
    if not path.exists():
        raise PatchError(f"{path}: no pristine copy; run `bash setup.sh`.")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def unified_diff(target: str, pristine: bytes, patched: bytes) -> str:
    """A deterministic unified diff (no timestamps), as GNU patch -p1 reads it."""
    old, new = pristine.decode().splitlines(keepends=True), patched.decode().splitlines(keepends=True)
    for name, lines in (("pristine", old), ("patched", new)):
        if lines and not lines[-1].endswith("\n"):
            raise PatchError(f"{target}: the {name} file must end with a newline.")
    return "".join(difflib.unified_diff(old, new, f"a/{target}", f"b/{target}", n=3))


def pristine_file(pristine_dir: Path, target: str) -> Path:
    """A target's pristine file: in `pristine_dir`, or, for a file added to the patch set since `apply` kept that
    backup, the installed one while it is unpatched (the manifest's pristine hash, once the manifest lists it)."""
    path = pristine_dir / target
    if path.exists() or pristine_dir.name != BACKUP:
        return path
    installed = pristine_dir.parent / target
    known = load_manifest()["files"].get(target, {}).get("pristine") if MANIFEST.exists() else None
    if installed.exists() and known in (None, sha256(installed)):
        return installed
    raise PatchError(f"{path}: no pristine copy of a file added to the patch set; run `bash setup.sh` first.")


def expected_patches(pristine_dir: Path) -> dict[str, str]:
    """The diff text every target should have, computed from pristine files and `transformers_modif_files/`."""
    return {
        target: unified_diff(
            target, pristine_file(pristine_dir, target).read_bytes(), (MODIF_DIR / target).read_bytes()
        )
        for target in TARGETS
    }


def default_pristine_dir() -> Path:
    """The pristine copies kept by `apply`, or the installed package itself before it is first patched."""
    package_dir = installed_transformers_dir()
    return package_dir / BACKUP if (package_dir / BACKUP).exists() else package_dir


def regen(pristine_dir: Path) -> str:
    if transformers_version(pristine_dir.parent if pristine_dir.name == BACKUP else pristine_dir) != TRANSFORMERS_VERSION:
        raise PatchError(f"{pristine_dir}: not transformers {TRANSFORMERS_VERSION}.")
    PATCH_DIR.mkdir(exist_ok=True)
    for target, text in expected_patches(pristine_dir).items():
        (PATCH_DIR / patch_name(target)).write_text(text)
    manifest = {
        "transformers_version": TRANSFORMERS_VERSION,
        "files": {
            target: {"pristine": sha256(pristine_file(pristine_dir, target)), "patched": sha256(MODIF_DIR / target)}
            for target in TARGETS
        },
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    return f"wrote {len(TARGETS)} patches and {MANIFEST.relative_to(REPO)} from {pristine_dir}."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earlybird.transformers_patch", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["status", "apply", "revert", "regen"])
    parser.add_argument("--transformers-dir", type=Path, help="transformers package folder (default: the installed one)")
    parser.add_argument("--pristine", type=Path, help="regen: pristine files (default: the backup kept by apply)")
    args = parser.parse_args(argv)
    try:
        if args.command == "regen":
            print(regen(args.pristine or default_pristine_dir()))
            return 0
        package_dir = args.transformers_dir or installed_transformers_dir()
        if args.command == "status":
            state, states = overall_state(package_dir)
            print(f"transformers {transformers_version(package_dir)} at {package_dir}: {state}")
            if state == "other":
                for target, file_state in states.items():
                    print(f"  {target}: {file_state}")
                if earlier_patch(package_dir, load_manifest(), states):
                    print("  (an earlier patch set of this project: `bash setup.sh` replaces it)")
            return 0 if state == "patched" else 1
        print(apply(package_dir) if args.command == "apply" else revert(package_dir))
        return 0
    except (PatchError, OSError) as err:
        print(f"transformers_patch: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
