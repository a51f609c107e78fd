"""Fault-injection helpers: run the entry points in real child processes, killed or starved at precise points.

`ForkServer` is one Python process that imports torch, transformers and the entry points once and warms
them up with a one-step run, then forks a child per job: each job is a real process (a SIGKILL kills it
for good, exit codes and signals are real) that starts in ~0.3 s instead of ~8 s for a fresh interpreter.
Jobs run on one thread (OMP_NUM_THREADS=1: also what makes forking after torch safe) so their numbers
are bitwise reproducible. A job's environment may set EARLYBIRD_FAULT (earlybird.faults), which the
child re-reads at its start, as a fresh process would at import.

Imported by the test_reliability_* modules (test_reliability_faults.py exercises the server).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERVER = textwrap.dedent(
    """
    import json, os, sys, tempfile, traceback
    import torch
    from earlybird.training.entrypoints import ENTRY_POINTS, load_entry_point

    torch.set_num_threads(1)
    root = sys.argv[1]
    scripts = {name: load_entry_point(os.path.join(root, relative), f"entry_{name}")
               for name, relative in ENTRY_POINTS.items()}
    with tempfile.TemporaryDirectory() as warm:  # lazy imports and caches happen here, once
        devnull = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(1), os.dup(2)
        os.dup2(devnull, 1), os.dup2(devnull, 2)
        try:
            scripts["pretrain"].main(["--output-dir", warm + "/run", "--max-steps", "2", "--disable-tqdm",
                                      "--self-slimming", "--inter-slimming", "--l1-self", "1e-2",
                                      "--checkpoint-every", "1", "--per-device-train-batch-size", "8"])
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                out = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(out, 1), os.dup2(out, 2)
                os.environ.pop("EARLYBIRD_FAULT", None)
                os.environ.update(job.get("env", {}))
                from earlybird import faults
                faults.configure()  # what a fresh process does at import
                code = scripts[job["script"]].main(job["argv"])
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "code": os.waitstatus_to_exitcode(status)}), flush=True)
    """
)


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EARLYBIRD_FAULT"}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"})
    return env


class Result:
    def __init__(self, code: int, pid: int, log: Path):
        self.code, self.pid, self.log = code, pid, log

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def errors(self) -> list[str]:
        """The lines that say `<prog>: error: ...`."""
        return [line for line in self.output.splitlines() if ": error: " in line]

    def __repr__(self):
        return f"Result(code={self.code}, output={self.output[-2000:]!r})"


class ForkServer:
    def __init__(self, logs: Path):
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.jobs = 0
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT)], cwd=ROOT, env=child_env(),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline()
        if ready.strip() != "ready":
            self.close()
            raise RuntimeError(f"fork server did not start: {ready!r}")

    def run(self, script: str, argv, fault: str | None = None, env: dict | None = None) -> Result:
        self.jobs += 1
        log = self.logs / f"job-{self.jobs}.log"
        job_env = dict(env or {})
        if fault:
            job_env["EARLYBIRD_FAULT"] = fault
        self.process.stdin.write(json.dumps({"script": script, "argv": [str(a) for a in argv], "env": job_env,
                                             "log": str(log)}) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise RuntimeError("fork server died")
        reply = json.loads(reply)
        return Result(reply["code"], reply["pid"], log)

    def close(self) -> None:
        """Stop the server (it holds nothing worth a clean shutdown; children have all been waited for)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()


def digests(root: Path) -> dict:
    """{relative path: sha256} of every file under root (symlinks and all): to prove nothing changed."""
    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
