"""The Hugging Face Trainer, extended at its seams for MeZO and for best-dev model selection.

Back-propagation (the paper's FT rows) is the stock training loop untouched. MeZO replaces only
`training_step`: two forward passes around an in-place, seeded perturbation (src/zo.py), and
the update applied there; the optimizer the loop then steps is a parameter-less placeholder that
only carries the learning rate for the scheduler. The loop, logging, progress bar and stopping
are the stock ones, so exactly `max_steps` updates happen.
"""
import logging
import math

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from . import zo

logger = logging.getLogger(__name__)


class LearningRateHolder(torch.optim.Optimizer):
    """A stateless optimizer: MeZO updates inside training_step; this only holds the lr."""

    def __init__(self, lr):
        super().__init__([torch.zeros(0)], {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        return None


def no_decay(name: str) -> bool:
    """Biases and LayerNorm weights, case-insensitively (RoBERTa's head uses `layer_norm`)."""
    lname = name.lower()
    return "bias" in lname or "layernorm" in lname or "layer_norm" in lname


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
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_step = score, state.global_step
            # A real copy: `.cpu()` of a CPU tensor is the live tensor (spec §9 item 29).
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


class MezoTrainer(Trainer):
    """Trainer whose step is MeZO when `--zero_order_optim` is on, the stock backprop step otherwise."""

    def __init__(self, *args, dev_objective=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.best = BestDevCallback(dev_objective)
        self.add_callback(self.best)
        a = self.args
        self.zo = a.zero_order_optim and not a.zero_order_use_trainer_optim
        if self.zo:
            # One seed per step from a generator seeded by --seed, as the reference does.
            self.zo_seeds = np.random.RandomState(a.seed)
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            self.zo_params = [p for _, p in named]
            self.zo_decay = [0.0 if a.zo_no_decay_bias_norm and no_decay(n) else a.weight_decay
                             for n, _ in named]
            self.zo_skipped = 0
            self.zo_forwards = 0
            # The reference's non-efficient mode stores z for the step; so does --zo_cache_z.
            self.zo_cache = a.zo_cache_z or not a.efficient_zero_order

    # ----- MeZO -------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if not self.zo:
            return super().create_optimizer(model)
        if self.optimizer is None:
            self.optimizer = LearningRateHolder(self.args.learning_rate)
        return self.optimizer

    def _clip_grad_norm(self, model):
        return None if self.zo else super()._clip_grad_norm(model)

    def _get_grad_norm(self, model, grad_norm=None):
        return None if self.zo else super()._get_grad_norm(model, grad_norm)

    def zo_forward(self, model, inputs) -> torch.Tensor:
        """Loss of one forward pass in eval mode (dropout off), without autograd."""
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        self.zo_forwards += 1
        return loss.detach()

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.zo:
            return super().training_step(model, inputs, num_items_in_batch)
        model.eval()
        inputs = self._prepare_inputs(inputs)
        seed = int(self.zo_seeds.randint(1_000_000_000))
        step = zo.mezo_step(self.zo_params, lambda: self.zo_forward(model, inputs), seed=seed,
                            eps=self.args.zero_order_eps, lr=self._get_learning_rate(),
                            weight_decay=self.zo_decay, cache_z=self.zo_cache)
        if step.skipped:
            self.zo_skipped += 1
            logger.warning("step %d: non-finite MeZO loss (%s, %s); update skipped",
                           self.state.global_step, step.loss_plus, step.loss_minus)
            return torch.tensor(float("nan"), device=self.args.device)
        return torch.tensor(step.loss_plus, device=self.args.device)

    # ----- model selection --------------------------------------------------------------------
    def restore_best(self) -> bool:
        restored = self.best.restore(self.model)
        if self.args.evaluate_during_training and not restored:
            logger.warning("no dev evaluation happened during training (max_steps < eval_steps?): "
                           "keeping the last weights")
        return restored

    def train_summary(self) -> dict:
        """Facts about the finished training for the result record."""
        out = {"global_step": self.state.global_step,
               "best_dev_step": self.best.best_step,
               "dev_curve": self.best.curve,
               "train_loss_curve": [(h["step"], h["loss"]) for h in self.state.log_history
                                    if "loss" in h and "step" in h and math.isfinite(h["loss"])]}
        if self.zo:
            out.update(zo_skipped_steps=self.zo_skipped, zo_forward_steps=self.zo_forwards)
        return out
