"""The SPSA gradient estimate written into ``.grad``, so that any torch optimizer takes the step.

    est = SPSAGradient(model.parameters(), eps=1e-3, samples=4, seed=0)
    loss = est.backward(lambda: model(**batch).loss)     # in place of loss.backward()
    torch_opt.step(); torch_opt.zero_grad()

Each sample is ``mezo.zo.step.mezo_step`` with ``into_grad``: perturb, two losses, restore theta,
add g z / (samples * grad_accum) to ``.grad``. This is the original's
``--zero_order_use_trainer_optim`` path (n-SPSA, ZO with Adam, clipping); the ablations of
``mezo.zo.ablations`` (``--zo_by_layer``, block scales) come in as ``blocks``.
"""
import logging
from typing import Callable, Optional

import torch

from mezo.zo.ablations import num_samples
from mezo.zo.backend import FastNoise
from mezo.zo.optim import SeedStream
from mezo.zo.step import Noise, mezo_step

logger = logging.getLogger(__name__)


class SPSAGradient:
    """n-SPSA into ``.grad``: ``samples`` pairs per call (or a ``scheduler`` of them), theta unchanged."""

    def __init__(self, params, eps: float = 1e-3, *, samples: int = 1, scheduler: Optional[str] = None,
                 scale_lr_with_samples: bool = False, seed: int = 0, noise: Optional[Noise] = None, blocks=None):
        self.params = [p for p in params if p.requires_grad]
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        num_samples(scheduler, samples, 0, 1)   # validates both
        self.eps, self.samples, self.scheduler = float(eps), int(samples), scheduler
        self.scale_lr_with_samples = scale_lr_with_samples
        self.noise = noise if noise is not None else FastNoise()
        self.seeds = SeedStream(seed)
        self.blocks = blocks            # a mezo.zo.ablations.ZOAblation over the same parameters, or None
        self.skipped = 0                # pairs skipped for a non-finite loss

    def next_seed(self) -> int:
        return self.seeds()

    @torch.no_grad()
    def backward(self, closure: Callable[[], torch.Tensor], *, global_step: int = 0, max_steps: int = 0,
                 grad_accum: int = 1) -> float:
        """Add the estimate to ``.grad``; returns the mean loss at theta + eps z (nan if no pair was finite)."""
        n = num_samples(self.scheduler, self.samples, global_step, max_steps)
        div = grad_accum * (1 if self.scale_lr_with_samples else n)
        pairs = self.blocks.pairs(global_step) if self.blocks is not None else [(None, range(len(self.params)))]
        losses = []
        for _ in range(n):
            for key, members in pairs:
                params = [self.params[i] for i in members]
                pert, upd = self.blocks.scales(key, members) if self.blocks is not None else (1.0, 1.0)
                lp, lm, g, skipped = mezo_step(params, closure, self.noise, self.next_seed(), eps=self.eps,
                                               pert=pert, upd=upd, into_grad=1.0 / div)
                if skipped:
                    self.skipped += 1
                    logger.warning("step %d: non-finite ZO loss (%s, %s); sample skipped", global_step, lp, lm)
                    continue
                losses.append(lp)
                if self.blocks is not None:
                    self.blocks.after_pair(key, g)
        return sum(losses) / len(losses) if losses else float("nan")

    def state_dict(self) -> dict:
        return {"seeds": self.seeds.state_dict(), "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.seeds.load_state_dict(state["seeds"])
        self.skipped = int(state["skipped"])
