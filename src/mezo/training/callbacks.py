"""The Trainer callbacks of a run; each owns its state and acts only at the loop's public events.

`BestDevCallback` evaluates every --eval_steps and keeps the first strictly-best weights (the
paper's model selection); `DataOrder` makes a resumed run draw the same batches as an uninterrupted
one; `StartupClock` times process start to the first step. None holds a reference to the trainer:
the trainer hands them what they need (the sampler, the model at `on_evaluate`) and the checkpoint
saves their `state_dict()`.
"""
import logging
import math
import time

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class BestDevCallback(TrainerCallback):
    """Evaluate every `eval_steps` updates; keep a CPU copy of the first strictly-best weights."""

    def __init__(self, objective):
        self.objective = objective
        self.best_score = None
        self.best_step = None
        self.best_state = None
        self.curve = []  # (step, dev objective) of every evaluation during training
        self.training = False

    def on_train_begin(self, args, state, control, **kw):
        self.training = True

    def on_train_end(self, args, state, control, **kw):
        self.training = False

    def on_step_end(self, args, state, control, **kw):
        if args.evaluate_during_training and state.global_step % args.eval_steps == 0:
            control.should_evaluate = True

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
        if not self.training:
            return
        score = self.objective(metrics)
        self.curve.append((state.global_step, score))
        # As the original: the bar starts at -inf and only a strictly greater score replaces it,
        # so a NaN (e.g. Pearson of constant predictions) or -inf score is never kept.
        if score > (-math.inf if self.best_score is None else self.best_score):
            self.best_score, self.best_step = score, state.global_step
            # A real copy: `.cpu()` of a CPU tensor is the live tensor (README, Differences from the original code).
            self.best_state = {n: p.detach().to("cpu", copy=True)
                               for n, p in model.named_parameters() if p.requires_grad}
            logger.info("new best dev %.5f at step %d", score, state.global_step)

    def restore(self, model) -> bool:
        """Load the best weights back; False (and the last weights kept) if none was taken."""
        if self.best_state is None:
            return False
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.best_state.items():
                params[name].copy_(value)
        return True

    def state_dict(self) -> dict:
        return {"score": None if self.best_score is None else float(self.best_score),
                "step": self.best_step, "weights": self.best_state,
                "curve": [[int(s), float(v)] for s, v in self.curve]}

    def load_state_dict(self, b: dict) -> None:
        self.best_score, self.best_step, self.best_state = b["score"], b["step"], b["weights"]
        self.curve = [(s, v) for s, v in b["curve"]]


class DataOrder(TrainerCallback):
    """Exact resumption of the original's data order (single process).

    Remembers (epoch, generator state) as each epoch begins; in a resumed run, puts the generator
    back to the start of the resumed epoch, and the stock loop then skips the batches already
    seen. A checkpoint taken at an epoch's last step resumes at the next epoch: the skipped epoch
    is drawn in full so that the generator advances as it did.
    """

    def __init__(self):
        self.sampler = None       # set by MezoTrainer.get_train_dataloader (data.original_train_sampler)
        self.epoch_state = None   # (epoch, generator state) as the current epoch began
        self.resume_state = None  # the same, read from the checkpoint being resumed

    def on_epoch_begin(self, args, state, control, **kw):
        if self.sampler is None:
            return
        generator = self.sampler.generator
        epoch = int(state.epoch or 0)
        if self.resume_state is not None:
            saved_epoch, saved = self.resume_state
            self.resume_state = None
            generator.set_state(saved)
            for _ in range(epoch - saved_epoch):
                for _ in self.sampler:   # one whole epoch of draws
                    pass
        self.epoch_state = (epoch, generator.get_state())


def process_start_time() -> float:
    """When this process began (psutil: an accelerate dependency), so start-up counts the interpreter
    and the imports too; the import of this module where psutil is unusable."""
    try:
        import psutil
        return psutil.Process().create_time()
    except Exception:  # pragma: no cover - psutil ships with accelerate
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


class StartupClock(TrainerCallback):
    """Seconds from process start to the first training step (`startup_s` in the run's record)."""

    def __init__(self):
        self.start = process_start_time()
        self.seconds = None

    def on_step_begin(self, args, state, control, **kw):
        if self.seconds is None:
            self.seconds = time.time() - self.start
