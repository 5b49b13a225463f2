"""Loss functions the zeroth-order optimizers take: gradient accumulation and FZOO's batched losses.

Both are closures in the ``step(closure)`` sense: they return the loss at the current parameters.
``accumulated_loss`` spreads one loss over micro-batches; ``VmapLosses`` evaluates FZOO's N
perturbed losses in one vmapped forward (``mezo.training.fzoo_batched`` decides when to use it).
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mezo.zo.noise import ParamNoise


def accumulated_loss(parts: Sequence[Tuple[Callable[[], torch.Tensor], int]]) -> Callable[[], torch.Tensor]:
    """Gradient accumulation for MeZO: one loss_fn over n micro-batches, ``parts = [(loss_fn_k, size_k)]``.

    Returns sum_k size_k L_k / sum_k size_k, i.e. the mean loss over the full batch when each L_k is
    the mean over its micro-batch. ``mezo.zo.step.mezo_step`` calls it inside each perturbed state, so every
    micro-batch sees the same z (the same seed) and the update equals the full-batch update up to
    float rounding, while only one micro-batch's activations are alive at a time. It counts n
    forwards per loss evaluation. When every part offers FZOO's batched ``perturbed_losses``
    (--fzoo_batched), so does the result: each micro-batch batched in turn, averaged the same way.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("accumulated_loss: no micro-batches")
    total = sum(int(n) for _, n in parts)
    if total <= 0:
        raise ValueError("accumulated_loss: micro-batch sizes must sum to > 0")

    def loss_fn() -> torch.Tensor:
        acc = 0.0
        for fn, n in parts:
            acc += float(fn()) * int(n)
        return torch.tensor(acc / total, dtype=torch.float64)

    if all(hasattr(fn, "perturbed_losses") for fn, _ in parts):
        def perturbed_losses(noise, params, seeds, eps) -> Optional[List[float]]:
            """FZOO's batched losses, micro-batch by micro-batch, averaged as above (None: fall back)."""
            acc = np.zeros(len(seeds))
            for fn, n in parts:
                ls = fn.perturbed_losses(noise, params, seeds, eps)
                if ls is None:
                    return None
                acc += np.asarray(ls, dtype=np.float64) * int(n)
            return (acc / total).tolist()
        loss_fn.perturbed_losses = perturbed_losses
    return loss_fn



class VmapLosses:
    """FZOO's batched evaluation: the N perturbed losses in one vmapped forward (``torch.func``).

    ``loss_of(params_dict) -> loss`` runs the model functionally (``torch.func.functional_call``).
    Stacked copy k of parameter i is theta_i + eps u_k, made as the sequential loop makes it
    (``add_(z, alpha=eps)``), so both paths see the same perturbed numbers. Memory: N copies of
    the trainable parameters and activations of N times the batch, so this suits small parameter
    sets (heads, adapters, prefixes); mezo.training.fzoo_batched decides when the Trainer uses it.
    """

    def __init__(self, names: Sequence[str], loss_of: Callable[[Dict[str, torch.Tensor]], torch.Tensor]):
        self.names = list(names)
        self.loss_of = loss_of

    def losses(self, noise: ParamNoise, params, seeds, eps) -> torch.Tensor:
        """The N losses as a tensor (on the parameters' device)."""
        stacked = []
        with torch.no_grad():
            for i, p in enumerate(params):
                copies = p.detach().unsqueeze(0).repeat(len(seeds), *([1] * p.dim()))
                for k, s in enumerate(seeds):
                    copies[k].add_(noise.z(p, i, s), alpha=eps)
                stacked.append(copies)
            f = lambda *ps: self.loss_of(dict(zip(self.names, ps)))  # noqa: E731
            return torch.func.vmap(f)(*stacked)

    def __call__(self, noise: ParamNoise, params, seeds, eps) -> List[float]:
        return self.losses(noise, params, seeds, eps).tolist()


