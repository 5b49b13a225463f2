"""Watching a MeZO run live: its own scalars in the Trainer's logs, a progress bar that says something.

`StepMonitor` collects every MeZO step's outcome (`mezo.zo.step.ZOStep`: loss₊, loss₋, projected
gradient, skipped) between two logging steps; `MezoTrainer.log` hands each training log to
`extend`, which adds their means, the number of skipped steps so far and the examples per second
of the window's updates (timed from step begin to step end: evaluations and logging excluded). The stock loop then passes the log to every `--report_to` integration
(TensorBoard: `train/zo_loss_plus`, ...; dev evaluations arrive as `eval/<metric>`), to the
log history and to the console: nothing is written outside the Trainer's own channels.

`MezoProgressCallback` replaces the stock progress bar by the same bar counting steps (tqdm shows
steps/s and the ETA) with the last and the best dev score as its postfix.
"""
import math
import time

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

# Log keys added to every training log of a MeZO run (TensorBoard tag = "train/" + key).
LOSS_PLUS, LOSS_MINUS, GRAD = "zo_loss_plus", "zo_loss_minus", "zo_projected_grad"
SKIPPED, EXAMPLES_PER_S = "zo_skipped_steps", "train_examples_per_s"


def _mean(values):
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")


class StepMonitor(TrainerCallback):
    """The MeZO step values of the current logging window, and the window's throughput."""

    def __init__(self, zo_run=None, examples_per_step: int = 1):
        self.zo_run = zo_run   # mezo.training.zo_run.ZORun: the skip counter (None: not a MeZO run)
        self.examples_per_step = examples_per_step
        self.steps = []
        self.busy = 0.0  # seconds spent inside the window's updates
        self.window_step = 0
        self.step_start = None

    def on_train_begin(self, args, state, control, **kw):
        self.steps, self.busy, self.window_step = [], 0.0, state.global_step

    def on_step_begin(self, args, state, control, **kw):
        self.step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self.step_start is not None:
            self.busy += time.perf_counter() - self.step_start
            self.step_start = None

    def record(self, step) -> None:
        """One MeZO step's outcome (a skipped step counts only in the skip counter)."""
        if not step.skipped:
            self.steps.append(step)

    def extend(self, logs: dict, global_step: int) -> dict:
        """Add this window's MeZO scalars to a periodic training log (other logs pass unchanged)."""
        if "loss" not in logs or self.zo_run is None or not self.zo_run.params:
            return logs
        if self.steps:
            logs[LOSS_PLUS] = _mean([s.loss_plus for s in self.steps])
            logs[LOSS_MINUS] = _mean([s.loss_minus for s in self.steps])
            logs[GRAD] = _mean([s.grad for s in self.steps])
        logs[SKIPPED] = int(self.zo_run.skipped)
        if global_step > self.window_step and self.busy > 0:
            logs[EXAMPLES_PER_S] = (global_step - self.window_step) * self.examples_per_step / self.busy
        self.steps, self.busy, self.window_step = [], 0.0, global_step
        return logs


def examples_per_step(args, train_dataset) -> int:
    """Nominal examples per update, as the Trainer counts them (capped by a smaller train set)."""
    per_step = args.train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
    n = len(train_dataset) if train_dataset is not None and hasattr(train_dataset, "__len__") else None
    return min(per_step, n) if n else per_step


class MezoProgressCallback(ProgressCallback):
    """The stock bar in steps (tqdm: steps/s, ETA), with `dev=<last> best=<best>@<step>` once evaluated."""

    def __init__(self, best):
        super().__init__()
        self.best = best  # mezo.training.callbacks.BestDevCallback: runs before this callback, holds the dev curve

    def on_train_begin(self, args, state, control, **kw):
        super().on_train_begin(args, state, control, **kw)
        if self.training_bar is not None:
            self.training_bar.unit = "step"

    def on_evaluate(self, args, state, control, **kw):
        super().on_evaluate(args, state, control, **kw)
        if self.training_bar is not None and self.best.training and self.best.curve:
            self.training_bar.set_postfix_str(self.postfix(), refresh=True)

    def postfix(self) -> str:
        last = self.best.curve[-1][1]
        return f"dev={last:.4f} best={self.best.best_score:.4f}@{self.best.best_step}"


def install(trainer, zo_run=None) -> StepMonitor:
    """Register the monitor and swap the stock progress bar (if shown) for the MeZO one."""
    monitor = StepMonitor(zo_run, examples_per_step(trainer.args, trainer.train_dataset))
    trainer.add_callback(monitor)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(MezoProgressCallback(trainer.best))
    return monitor
