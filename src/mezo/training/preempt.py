"""Preemption: SIGTERM or SIGINT during training ends the run with a checkpoint, not with lost work.

Cluster schedulers (Slurm, Kubernetes) send SIGTERM some seconds before they kill a job. With
checkpoints on (`--save_steps`), `PreemptCallback` turns the first SIGTERM/SIGINT into a flag; the
step in flight finishes, and at its `on_step_end` the callback asks the stock loop to save
(`control.should_save`, i.e. the atomic `checkpoint.save`) and to stop. `on_train_end` then raises
`Preempted`: run.py prints one line and exits 128 + signal number without a log record, and
`--resume_from_checkpoint auto` continues from that step exactly (same parameters and record as
an uninterrupted run). A second signal restores the previous handler and re-delivers itself
(a user who presses Ctrl-C twice wants out now).

Acting at a step boundary, never inside the handler, keeps the MeZO perturbation and the optimizer
state consistent: a signal that lands between the two forward passes of a MeZO step must not
write theta + eps z. Data-parallel ranks agree on the flag (one all-reduce per step) so that all
stop at the same step. Without checkpoints the handlers are not installed: the default behaviour
(SIGTERM kills, Ctrl-C raises KeyboardInterrupt, which run.py reports in one line) is unchanged.
The last step cannot be checkpointed (see mezo.training.checkpoint); a signal there still stops the run,
and a resumed run redoes the steps since the latest periodic checkpoint.
"""
import logging
import os
import signal
import threading

import torch
from transformers import TrainerCallback

from mezo.errors import Preempted

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def checkpoints_enabled(args) -> bool:
    return str(getattr(args, "save_strategy", "no")).lower() not in ("no", "savestrategy.no")


class PreemptCallback(TrainerCallback):
    """Installed by MezoTrainer; does nothing unless checkpoints are on."""

    def __init__(self):
        self.signum = None
        self.stopped_at = None
        self.previous = {}

    # ----- the handler: only records the signal ---------------------------------------------
    def _handler(self, signum, frame):
        if self.signum is not None:  # second signal: give way to the previous behaviour now
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        logger.warning("%s received: finishing the current step, then writing a checkpoint and stopping "
                       "(send it again to stop at once)", signal.Signals(signum).name)

    def _install(self):
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal only works in the main thread
        for s in SIGNALS:
            self.previous[s] = signal.signal(s, self._handler)

    def _restore(self):
        for s, h in self.previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self.previous = {}

    # ----- acting at step boundaries --------------------------------------------------------
    @staticmethod
    def _any_rank(flag: bool, device) -> bool:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1):
            return flag
        t = torch.tensor([int(flag)], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def on_train_begin(self, args, state, control, **kw):
        self.signum = self.stopped_at = None
        if checkpoints_enabled(args):
            self._install()

    def on_step_end(self, args, state, control, **kw):
        if not checkpoints_enabled(args):
            return
        if self._any_rank(self.signum is not None, args.device):
            if self.signum is None:  # another rank got the signal
                self.signum = signal.SIGTERM
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kw):
        self._restore()
        if self.stopped_at is None:
            return
        from mezo.training import checkpoint
        path = os.path.join(args.output_dir, f"{checkpoint.PREFIX}-{self.stopped_at}")
        raise Preempted(self.signum, self.stopped_at, path if checkpoint.is_complete(path) else None)
