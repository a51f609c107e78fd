"""Preemption: SIGTERM (SLURM, Kubernetes, spot instances) and Ctrl-C stop a run at a step boundary, with a checkpoint.

    stop = Preemption(prog, exit_code).install()      # the runner, for the whole run (stop.restore() at its end)
        agree = StopAgreement(accelerator)
        every step: if agree.step(stop.signum or 0): checkpoint (the records are flushed with it), stop

The handler only sets a flag: the current optimizer step finishes, the loop saves a checkpoint, the runner flushes the
records, releases the lock, prints one line and exits with `exit_code` (128 + the signal's number -- 143 for SIGTERM,
130 for SIGINT -- unless --exit-code-on-preempt says otherwise), which a scheduler can requeue on.

A second SIGINT (Ctrl-C pressed again) exits at once, without a checkpoint, saying so. A second SIGTERM is ignored:
under `accelerate launch` / torchrun the launcher forwards the SIGTERM it got to every worker, so a worker that a
scheduler signalled directly gets it twice within milliseconds; the scheduler's SIGKILL after its grace period is the
hard stop.

Several processes must stop at the same step (a process that saves alone would deadlock the others) although a
signal may reach one process first, or only one. `StopAgreement` takes the maximum of every process's signal number
(0: none) in an all-reduce of one integer at each step, issued on the device with no host sync, and reads it one
step later from pinned memory after waiting on a CUDA event recorded behind it: the host never waits for the step it
has just queued (it still runs one step ahead of the device), and every process reads the same value at the same
step, so all stop together, one step after the first signal. On the CPU (gloo) the all-reduce is synchronous and the read free. One process: no collective.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preemption:
    """The SIGTERM / SIGINT handlers of a run, from install() to restore() (main thread only; elsewhere inert)."""

    def __init__(self, prog: str, exit_code: int | None = None):
        self.prog = prog
        self.exit_code_override = exit_code
        self.signum: int | None = None
        self._previous: dict = {}

    def exit_code(self, signum: int) -> int:
        """--exit-code-on-preempt, else 128 + the signal's number (what a shell reports for a job killed by it)."""
        return self.exit_code_override if self.exit_code_override is not None else 128 + int(signum)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum  # the run says what it did in one line when it stops (runner._preempted)
        elif signum == signal.SIGINT:
            print(f"{self.prog}: second SIGINT: exiting at once, without a checkpoint (the previous one is intact; "
                  "--resume continues from it)", file=sys.stderr, flush=True)
            os._exit(128 + signal.SIGINT)
        # a repeated SIGTERM: the launcher forwarding the scheduler's (see the module docstring); keep stopping

    def install(self) -> "Preemption":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class StopAgreement:
    """`step(signum)` on every process at every optimizer step, with the signal this process got (0: none): from the
    step where any process passed one, every process gets the same non-zero signal number back (the largest given),
    at the same step -- one step later under several processes, at once with one."""

    def __init__(self, accelerator):
        import torch

        self.world = accelerator.num_processes
        self._pending = False
        if self.world == 1:
            return
        device = accelerator.device
        self._flag = torch.zeros(1, dtype=torch.int32, device=device)
        cuda = device.type == "cuda"
        self._host = torch.zeros(1, dtype=torch.int32, pin_memory=cuda)
        self._event = torch.cuda.Event() if cuda else None

    def step(self, signum: int) -> int:
        if self.world == 1:
            return signum
        import torch.distributed as dist

        agreed = 0
        if self._pending:  # the maximum issued at the previous step: every process reads the same value here
            if self._event is not None:
                self._event.synchronize()  # waits for that step's all-reduce, not for the step just queued
            agreed = int(self._host[0])
        self._flag.fill_(int(signum))  # a device-side fill: no host sync
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX)
        self._host.copy_(self._flag, non_blocking=self._event is not None)
        if self._event is not None:
            self._event.record()
        self._pending = True
        return agreed
