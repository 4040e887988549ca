"""When a run must stop before `steps`: a preemption signal, or a non-finite loss.

Both are decided at the end of an optimizer step, by all ranks together (one all-reduce of two
flags per step), so every rank stops at the same step:

- Preemption. SIGTERM (what SLURM sends before it preempts a job or at its time limit) and
  SIGUSR1 (what `#SBATCH --signal=B:USR1@<seconds>` asks for earlier; launch/slurm.sbatch
  forwards it) set a flag on the rank that gets them; the step in progress finishes, every rank
  saves a checkpoint at that step, and the process exits with PREEMPTED_EXIT (75, EX_TEMPFAIL:
  "try again"). `resume: auto` continues from that checkpoint exactly.
- A non-finite loss or gradient norm. `optim.nonfinite: stop` (the default) stops the run with
  one line naming the step and the tasks in its batch, exit NONFINITE_EXIT (3), and saves
  nothing of that state (Megatron-LM stops too). `optim.nonfinite: skip` counts and logs such a
  step and goes on, the update dropped by DeepSpeed's overflow check (ZeRO 1/2: the optimizer
  step is skipped when the gradient norm is not finite); after `optim.max_nonfinite_in_a_row`
  in a row it stops as above. A non-finite step whose update was applied stops in either mode.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from generalist import distributed as dist
from generalist.errors import GeneralistError

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

    from generalist.train.step import LossMeter

PREEMPTED_EXIT = 75  # sysexits EX_TEMPFAIL: the job may be run again (launch/slurm.sbatch requeues)
NONFINITE_EXIT = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(GeneralistError):
    """The run was asked to stop (SIGTERM/SIGUSR1) and saved a checkpoint."""

    exit_code = PREEMPTED_EXIT
    label = "preempted"


class NonFiniteLoss(GeneralistError):
    """A step's loss or gradient norm was NaN or infinite."""

    exit_code = NONFINITE_EXIT


class StepChecks:
    """The end-of-step checks: catches the stop signals from construction on (main thread)."""

    def __init__(self, nonfinite: str, max_in_a_row: int, device: torch.device) -> None:
        self.nonfinite = nonfinite
        self.max_in_a_row = max_in_a_row
        self.device = device
        self.signal: str | None = None
        self.skipped = 0  # non-finite steps skipped in this process
        self.skipped_step = False  # the last step was skipped: nothing of it is logged or saved
        self.in_a_row = 0
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._caught)

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        # only a flag: the step in progress (maybe inside a collective) finishes first
        self.signal = signal.Signals(signum).name

    def after_step(
        self,
        step: int,
        engine: DeepSpeedEngine,
        window: Sequence[tuple[object, dict[str, Any]]],
        meter: LossMeter,
        meter_before: torch.Tensor,
        skipped_before: int,
    ) -> bool:
        """After optimizer step `step` (collective). Raises NonFiniteLoss to stop; returns True
        when a stop signal reached any rank (the caller saves a checkpoint, then preempted())."""
        norm = engine.get_global_grad_norm()
        norm = float(norm) if norm is not None else 0.0
        loss_bad = not bool(torch.isfinite(meter.totals).all())
        flags = torch.tensor(
            [float(loss_bad), float(self.signal is not None)], dtype=torch.float64
        ).to(self.device)
        loss_bad, stop = (bool(x > 0) for x in dist.all_reduce_sum(flags).tolist())
        bad = loss_bad or not math.isfinite(norm)
        self.skipped_step = False
        if not bad:
            self.in_a_row = 0
            return stop
        what = "loss" if loss_bad else f"gradient norm ({norm})"
        tasks = _tasks_in_step(window)
        applied = getattr(engine, "skipped_steps", skipped_before) == skipped_before
        if self.nonfinite == "skip" and not applied:
            self.skipped += 1
            self.in_a_row += 1
            meter.totals.copy_(meter_before)  # the logged losses leave the skipped step out
            self.skipped_step = True
            if self.in_a_row < self.max_in_a_row:
                if dist.is_main():
                    print(
                        f"generalist train: step {step}: non-finite {what}, update skipped "
                        f"({self.skipped} skipped so far; tasks: {', '.join(tasks)})"
                    )
                return stop
            raise NonFiniteLoss(
                f"non-finite {what} at step {step}, {self.in_a_row} steps in a row "
                f"(optim.max_nonfinite_in_a_row); tasks in its batch: {', '.join(tasks)}; no "
                f"checkpoint of this state was saved. Lower optim.lr or check these tasks' data"
            )
        also = "" if self.nonfinite == "stop" else " (the update was applied: not skippable)"
        raise NonFiniteLoss(
            f"non-finite {what} at step {step}{also}; tasks in its batch: {', '.join(tasks)}; "
            f"the run stops and no checkpoint of this state was saved. Lower optim.lr or check "
            f"these tasks' data, or set optim.nonfinite=skip to skip such steps"
        )

    def preempted(self, step: int, checkpoint: object) -> Preempted:
        """The error to raise once the checkpoint of `step` is saved."""
        by = self.signal or "a stop signal on another rank"
        return Preempted(
            f"stopped by {by} after step {step}; checkpoint {checkpoint} saved; run again with "
            f"resume=auto to continue (exit code {PREEMPTED_EXIT})"
        )


def _tasks_in_step(window: Sequence[tuple[object, dict[str, Any]]]) -> list[str]:
    """The tasks of the step's global batch: every rank's micro-batches (collective)."""
    mine = sorted({name for _, batch in window for name in batch["task_names"]})
    if not torch.distributed.is_initialized() or dist.world_size() == 1:
        return mine
    gathered: list[list[str] | None] = [None] * dist.world_size()
    torch.distributed.all_gather_object(gathered, mine)
    return sorted({name for names in gathered for name in names or []})
