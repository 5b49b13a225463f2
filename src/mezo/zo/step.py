"""The MeZO step (Malladi et al. 2023, Algorithm 1), written to be read.

    seed s;  theta += eps z;  l+ = L(theta);  theta -= 2 eps z;  l- = L(theta);
    g = (l+ - l-) / (2 eps);  theta += eps z (restore);  theta -= lr (g z + wd theta)

z ~ N(0, I) is never stored: every pass regenerates it from the seed, so MeZO needs no memory
beyond inference. ``mezo_step`` is that algorithm, line by line, against the small ``Noise``
interface; speed lives behind the interface (``mezo.zo.backend.FastNoise``). ``PlainNoise`` is
the literal implementation that the tests hold the fast one to.

The ablations are parameters of this one step, not copies of it: per-parameter learning rates,
weight decays and perturbation/update scales (param groups, ``--zo_variant`` block scaling), the
loss function (``--optimize_acc``) and the restore-and-add-to-``.grad`` ending (``into_grad``,
the estimator of ``mezo.zo.estimator``). The optimizers of ``mezo.zo.optim`` call it.
"""
import math
from typing import Callable, List, NamedTuple, Optional, Protocol, Sequence, Union

import torch

Scales = Union[float, Sequence[float]]


class ZOStep(NamedTuple):
    """Outcome of one SPSA step: the two losses, the projected gradient, whether it was skipped."""
    loss_plus: float
    loss_minus: float
    grad: float
    skipped: bool


class Noise(Protocol):
    """What the step needs from z(seed): three in-place passes over a list of parameters."""

    def add_(self, params, seed: int, scales: Scales) -> None:
        """theta_i += scales_i z_i(seed)."""

    def decay_add_(self, params, seed: int, decays: Scales, scales: Scales) -> None:
        """theta_i += decays_i theta_i + scales_i z_i(seed) (restore and update in one pass)."""

    def add_to_grad_(self, params, seed: int, scales: Scales) -> None:
        """p_i.grad += scales_i z_i(seed)."""


def per_param(x: Scales, n: int, what: str = "scales") -> List[float]:
    """A float for each of n parameters: one value repeated, or a sequence of exactly n."""
    if isinstance(x, (int, float)):
        return [float(x)] * n
    x = [float(v) for v in x]
    if len(x) != n:
        raise ValueError(f"{what}: {len(x)} values for {n} parameters")
    return x


def mezo_step(params, loss_fn: Callable[[], torch.Tensor], noise: Noise, seed: int, *, eps: float,
              lr: Scales = 0.0, weight_decay: Scales = 0.0, pert: Scales = 1.0, upd: Scales = 1.0,
              into_grad: Optional[float] = None) -> ZOStep:
    """One SPSA step on ``params`` with the z of ``seed``.

    lr, weight_decay, pert, upd: one value or one per parameter (param groups); pert and upd scale
    z in the perturbation and in the update (block variants).
    into_grad=None: update theta in place, theta <- theta - lr (g upd z + wd theta).
    into_grad=c: restore theta and add c g upd z to ``.grad`` instead (an optimizer steps later).
    A non-finite g restores theta and skips; a loss_fn that raises has theta restored first.
    """
    params = list(params)
    n = len(params)
    plus = [eps * p for p in per_param(pert, n, "pert")]
    upd, wd, lr = per_param(upd, n, "upd"), per_param(weight_decay, n, "weight_decay"), per_param(lr, n, "lr")

    noise.add_(params, seed, plus)                                        # theta + eps z
    loss_plus = guarded_loss(loss_fn, lambda: noise.add_(params, seed, [-s for s in plus]))
    noise.add_(params, seed, [-2.0 * s for s in plus])                    # theta - eps z
    loss_minus = guarded_loss(loss_fn, lambda: noise.add_(params, seed, plus))
    g = (loss_plus - loss_minus) / (2.0 * eps)                            # projected gradient
    if into_grad is not None or not math.isfinite(g):
        noise.add_(params, seed, plus)                                    # restore theta
        if into_grad is not None and math.isfinite(g):
            noise.add_to_grad_(params, seed, [into_grad * g * u for u in upd])
        return ZOStep(loss_plus, loss_minus, g, not math.isfinite(g))
    # restore and update fused: theta <- (1 - lr wd)(theta_- + eps z) - lr g z, as theta_- + d theta_- + c z
    decay = [-r * w for r, w in zip(lr, wd)]
    noise.decay_add_(params, seed, decay, [(1.0 + d) * s - r * g * u for d, s, r, u in zip(decay, plus, lr, upd)])
    return ZOStep(loss_plus, loss_minus, g, False)


def guarded_loss(loss_fn, undo) -> float:
    """loss_fn() as a float; if it raises, take the perturbation back (``undo``) first."""
    try:
        return float(loss_fn())
    except BaseException:
        undo()
        raise


class PlainNoise:
    """The literal ``Noise``: z drawn whole by ``draw_z`` and applied with plain tensor ops.

    Slow and allocating; it states what a backend must compute (tests compare against it).
    """

    def __init__(self, draw_z: Callable[[list, int], List[torch.Tensor]]):
        self.draw_z = draw_z

    @torch.no_grad()
    def add_(self, params, seed, scales):
        self.decay_add_(params, seed, 0.0, scales)

    @torch.no_grad()
    def decay_add_(self, params, seed, decays, scales):
        params = list(params)
        n = len(params)
        for p, z, d, s in zip(params, self.draw_z(params, seed), per_param(decays, n), per_param(scales, n)):
            p.copy_(p + d * p + s * z)

    @torch.no_grad()
    def add_to_grad_(self, params, seed, scales):
        params = list(params)
        for p, z, s in zip(params, self.draw_z(params, seed), per_param(scales, len(params))):
            p.grad = s * z if p.grad is None else p.grad + s * z
