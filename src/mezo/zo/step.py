"""The MeZO step (Malladi et al. 2023, Algorithm 1; spec §5.2-§5.5), written to be read.

    seed s;  theta += eps z;  l+ = L(theta);  theta -= 2 eps z;  l- = L(theta);
    g = (l+ - l-) / (2 eps);  theta += eps z (restore);  theta -= lr (g z + wd theta)

z ~ N(0, I) is never stored: every pass regenerates it from the seed, so MeZO needs no memory
beyond inference. ``mezo_step`` below is that algorithm, line by line, against a small ``Noise``
interface; everything about speed lives behind the interface (src/mezo/zo_backend.py: chunked keyed
generators, threads, CUDA multi-tensor kernels). ``PlainNoise`` is the literal implementation
of the interface that tests/test_zo.py holds the fast one to.

The ablations are parameters of this one step, not copies of it: per-parameter perturbation and
update scales (``--zo_variant`` block scaling), the loss function (``--optimize_acc``), the
restore-and-add-to-``.grad`` ending of the trainer-optimizer path and n-SPSA (``into_grad``: one
call per sample), and the cached z (a backend option). ``ZeroOrderSGD`` wraps the step as an
optimizer for your own training loop.
"""
import math
from typing import Callable, List, NamedTuple, Optional, Protocol, Sequence, Union

import numpy as np
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
              lr: float = 0.0, weight_decay: Scales = 0.0, pert: Scales = 1.0, upd: Scales = 1.0,
              into_grad: Optional[float] = None) -> ZOStep:
    """One SPSA step on ``params`` with the z of ``seed``.

    pert, upd: per-parameter factors of z in the perturbation and in the update (block variants).
    into_grad=None: update theta in place, theta <- theta - lr (g upd z + wd theta).
    into_grad=c: restore theta and add c g upd z to ``.grad`` instead (an optimizer steps later).
    A non-finite g restores theta and skips; a loss_fn that raises has theta restored first.
    """
    params = list(params)
    n = len(params)
    plus = [eps * p for p in per_param(pert, n, "pert")]
    upd, wd = per_param(upd, n, "upd"), per_param(weight_decay, n, "weight_decay")

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
    decay = [-lr * w for w in wd]
    noise.decay_add_(params, seed, decay, [(1.0 + d) * s - lr * g * u for d, s, u in zip(decay, plus, upd)])
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


def default_noise(cache_z: bool = False) -> Noise:
    """The fast backend (imported here so that reading this module needs nothing else)."""
    from mezo.zo.backend import FastNoise
    return FastNoise(cache_z=cache_z)


class ZeroOrderSGD:
    """MeZO for your own training loop: ``opt.step(closure)`` runs one step, closure returns the loss.

        opt = ZeroOrderSGD(model.parameters(), lr=1e-6, eps=1e-3)
        for batch in loader:
            loss_plus, loss_minus = opt.step(lambda: model(**batch).loss)

    Works with any ``nn.Module`` (only parameters with ``requires_grad`` are perturbed, e.g. the
    adapters of a peft model). The closure runs under ``torch.no_grad()``; put the model in eval
    mode yourself if dropout should be off, as MeZO does. Seeds come from ``np.random.RandomState(seed)``.
    """

    def __init__(self, params, lr: float, eps: float = 1e-3, weight_decay: float = 0.0, seed: int = 0,
                 noise: Optional[Noise] = None):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.eps, self.weight_decay = lr, eps, weight_decay
        self.seeds = np.random.RandomState(seed)
        self.noise = noise if noise is not None else default_noise()
        self.last: Optional[ZOStep] = None

    def step(self, closure: Callable[[], torch.Tensor]):
        with torch.no_grad():
            self.last = mezo_step(self.params, closure, self.noise, int(self.seeds.randint(1_000_000_000)),
                                  eps=self.eps, lr=self.lr, weight_decay=self.weight_decay)
        return self.last.loss_plus, self.last.loss_minus
