"""The zeroth-order methods that followed MeZO, each one class on the one SPSA step (src/mezo/zo.py).

Every method answers the same small interface, so the Trainer (or your own loop) runs any of them:

    method = build_method("hizoo", params, eps=1e-3, weight_decay=0.0, alpha=1e-6)
    for batch in loader:
        step = method.step(lambda: loss_on(batch), seed=int(seeds.randint(1_000_000_000)), lr=lr)

* ``step(loss_fn, seed, lr) -> zo.ZOStep`` runs one update (under ``torch.no_grad()``); ``loss_fn()``
  is the loss at the current parameters (one forward); ``seed`` keys every direction of the step.
* ``forwards_per_step`` - how many ``loss_fn`` calls one step makes (the forward budget).
* ``state_dict()`` / ``load_state_dict()`` - exactly the state the method defines (momentum, Adam
  moments, HiZOO's Sigma, LOZO's step counter and V seed), for checkpoints; ``state_numel()`` is its
  size in numbers (MeZO, sign, conservative, FZOO: 0).

Where a method is an SPSA variant it *is* ``zo.mezo_step``: either with a new kind of direction
(a ``zo.Noise`` from src/mezo/zo_noise.py: LOZO's U V^T, HiZOO's Sigma^{1/2} z) and the fused update, or
with ``lr=0`` (perturb, two losses, restore) followed by the method's own update pass. Directions
are regenerated from the seed in every pass, never stored.

Gradient accumulation for MeZO is a loss function, not a method: ``accumulated_loss`` averages the
losses of n micro-batches (weighted by their sizes) inside each perturbed state, so the step sees
the full-batch loss under one z, with the activation memory of one micro-batch.

Weight decay is given per parameter (the Trainer's list, which exempts biases and LayerNorm
weights with ``--zo_no_decay_bias_norm``); each method applies it where its source does.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mezo.zo import step as zo
from mezo.zo.step import ZOStep, per_param
from mezo.zo.noise import GaussianParamNoise, LowRankNoise, ParamNoise, RademacherNoise, ScaledNoise, sub_seed


def _skipped(loss_plus=float("nan"), loss_minus=float("nan"), grad=float("nan")) -> ZOStep:
    return ZOStep(float(loss_plus), float(loss_minus), float(grad), True)


@torch.no_grad()
def add_z_into_(noise: zo.Noise, params, targets, seed: int, scales) -> None:
    """targets_i += scales_i z_i(seed) in place, through the noise's own ``add_to_grad_`` pass.

    The targets are lent to the parameters as ``.grad`` for the pass (so no copy of z is made);
    any existing ``.grad`` is put back afterwards.
    """
    params = list(params)
    saved = [p.grad for p in params]
    try:
        for p, t in zip(params, targets):
            p.grad = t
        noise.add_to_grad_(params, seed, scales)
        out = [p.grad for p in params]
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    for t, o in zip(targets, out):
        if o is not t:      # a noise that rebinds .grad (zo.PlainNoise) instead of adding in place
            t.copy_(o)


def accumulated_loss(parts: Sequence[Tuple[Callable[[], torch.Tensor], int]]) -> Callable[[], torch.Tensor]:
    """Gradient accumulation for MeZO: one loss_fn over n micro-batches, ``parts = [(loss_fn_k, size_k)]``.

    Returns sum_k size_k L_k / sum_k size_k, i.e. the mean loss over the full batch when each L_k is
    the mean over its micro-batch. ``zo.mezo_step`` calls it inside each perturbed state, so every
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


class ZOMethod:
    """Common part: the parameter list, eps, per-parameter weight decay, the noise, a step counter."""

    name = "mezo"
    forwards_per_step = 2

    def __init__(self, params, *, eps: float, weight_decay=0.0, noise: Optional[zo.Noise] = None):
        self.params = list(params)
        if not self.params:
            raise ValueError("no parameters to optimise")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.weight_decay = per_param(weight_decay, len(self.params), "weight_decay")
        self.noise = noise if noise is not None else self.default_noise()
        self.t = 0   # steps taken (skipped ones included)

    def default_noise(self) -> zo.Noise:
        return zo.default_noise()

    def step(self, loss_fn: Callable[[], torch.Tensor], seed: int, lr: float) -> ZOStep:
        with torch.no_grad():
            out = self._step(loss_fn, int(seed), float(lr))
        self.t += 1
        return out

    def _step(self, loss_fn, seed: int, lr: float) -> ZOStep:
        raise NotImplementedError

    def _spsa(self, loss_fn, seed: int, noise=None) -> ZOStep:
        """The SPSA pair with lr 0: perturb, two losses, restore theta; returns g."""
        return zo.mezo_step(self.params, loss_fn, noise or self.noise, seed, eps=self.eps)

    # --- state (checkpoints)
    def state_tensors(self) -> Dict[str, List[torch.Tensor]]:
        return {}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_numel(self) -> int:
        return sum(t.numel() for ts in self.state_tensors().values() for t in ts)

    def state_dict(self) -> dict:
        out = {"method": self.name, "t": self.t, **self.extra_state()}
        out.update({k: [t.detach().clone() for t in ts] for k, ts in self.state_tensors().items()})
        return out

    def load_state_dict(self, state: dict) -> None:
        if state.get("method") != self.name:
            raise ValueError(f"state of method {state.get('method')!r} given to {self.name!r}")
        self.t = int(state["t"])
        for k, ts in self.state_tensors().items():
            if len(state[k]) != len(ts):
                raise ValueError(f"{self.name} state {k}: {len(state[k])} tensors for {len(ts)} parameters")
            for t, v in zip(ts, state[k]):
                t.copy_(v)
        self.load_extra_state(state)


class MeZO(ZOMethod):
    """MeZO (Malladi et al. 2023, Algorithm 1): ``zo.mezo_step`` with its fused update; no state."""

    name = "mezo"

    def _step(self, loss_fn, seed, lr):
        return zo.mezo_step(self.params, loss_fn, self.noise, seed, eps=self.eps, lr=lr,
                            weight_decay=self.weight_decay)


class ZOSGDSign(ZOMethod):
    """ZO-SGD-Sign: theta <- theta - lr (sign(g) z + wd theta); no state, 2 forwards.

    Source: Zhang et al. 2024, "Revisiting Zeroth-Order Optimization for Memory-Efficient LLM
    Fine-Tuning: A Benchmark" (ZO-Bench), and its code ZO-Bench/ZO-LLM ``zo-bench/trainer.py``
    (``zo_step``, trainer ``zo_sign_opt``): the update uses sign(projected gradient) times z (the
    code's active "signOpt_orig"). ``elementwise=True`` gives the other reading, sign(g z)
    coordinate by coordinate (the code's commented-out "signOpt_mul_sign", and signSGD applied to
    the ZO estimate); it needs z elementwise, so it draws z per parameter (GaussianParamNoise).
    Noted, not reproduced: the public code steps the *Trainer's* optimizer with that "gradient",
    and with its default ``--optimizer adamw`` that is Hugging Face's AdamW, not SGD; the paper
    defines the method as the SGD update implemented here. ZO-Bench uses no weight decay (wd 0).
    """

    name = "sign"

    def __init__(self, params, *, eps, weight_decay=0.0, noise=None, elementwise: bool = False):
        self.elementwise = bool(elementwise)
        super().__init__(params, eps=eps, weight_decay=weight_decay, noise=noise)
        if self.elementwise and not isinstance(self.noise, ParamNoise):
            raise ValueError("elementwise ZO-SGD-Sign needs a per-parameter noise (zo_noise.ParamNoise)")

    def default_noise(self):
        return GaussianParamNoise() if self.elementwise else zo.default_noise()

    def _step(self, loss_fn, seed, lr):
        st = self._spsa(loss_fn, seed)
        if st.skipped:
            return st
        sg = float(np.sign(st.grad))
        if not self.elementwise:
            self.noise.decay_add_(self.params, seed, [-lr * w for w in self.weight_decay], -lr * sg)
            return st
        for i, (p, w) in enumerate(zip(self.params, self.weight_decay)):
            upd = self.noise.z(p, i, seed).sign_().mul_(sg)
            if w:
                upd.add_(p, alpha=w)
            p.sub_(upd, alpha=lr)
        return st


class ZOSGDConservative(ZOMethod):
    """ZO-SGD-Cons: take the SPSA step only if it lowers the loss; 5 forwards, no state.

    Source: ZO-Bench (Zhang et al. 2024), code ``zo-bench/trainer.py::zo_conserv_step``:
    l0 = L(theta) (before the seed is used); g from the SPSA pair; l1 = L(theta - lr g z);
    l2 = L(theta + lr g z); then, as the code decides: if l1 > l0, keep theta when l0 < l2, else
    theta + lr g z; if l1 <= l0, take theta - lr g z when l1 < l2, else theta + lr g z.
    A non-finite candidate loss counts as +inf here (the code compares NaNs, which then always
    lands on theta + lr g z). Weight decay is not part of the method (ZO-Bench runs wd 0): a
    non-zero one is refused. Same caveat as ZOSGDSign about the code's default AdamW.
    """

    name = "conservative"
    forwards_per_step = 5

    def __init__(self, params, *, eps, weight_decay=0.0, noise=None):
        super().__init__(params, eps=eps, weight_decay=weight_decay, noise=noise)
        if any(self.weight_decay):
            raise ValueError("ZO-SGD-Cons is defined without weight decay; use --weight_decay 0")
        self.last_choice: Optional[str] = None

    def _step(self, loss_fn, seed, lr):
        l0 = _finite_or_inf(loss_fn())
        st = self._spsa(loss_fn, seed)
        if st.skipped:
            return st
        c = lr * st.grad
        params, noise = self.params, self.noise
        noise.add_(params, seed, -c)                      # theta - lr g z
        l1 = _finite_or_inf(zo.guarded_loss(loss_fn, lambda: noise.add_(params, seed, c)))
        noise.add_(params, seed, 2.0 * c)                 # theta + lr g z
        l2 = _finite_or_inf(zo.guarded_loss(loss_fn, lambda: noise.add_(params, seed, -c)))
        if l1 > l0:
            if l0 < l2:
                noise.add_(params, seed, -c)              # back to theta
                self.last_choice = "theta"
            else:
                self.last_choice = "plus"
        elif l1 < l2:
            noise.add_(params, seed, -2.0 * c)            # theta - lr g z
            self.last_choice = "minus"
        else:
            self.last_choice = "plus"
        return st


def _finite_or_inf(x) -> float:
    x = float(x)
    return x if math.isfinite(x) else math.inf


class ZOSGDMomentum(ZOMethod):
    """ZO-SGD-MMT: heavy-ball momentum on the SPSA gradient; state = one buffer m (numel of the params).

    Source: ZO-Bench (Zhang et al. 2024), code ``zo-bench/trainer.py::zo_step`` with trainer
    ``zo_sgd`` and ``--momentum 0.9``, which steps ``torch.optim.SGD(momentum=mu)`` (dampening 0,
    no Nesterov): m <- mu m + (g z + wd theta) (m = g z + wd theta at the first step),
    theta <- theta - lr m. Memory-efficient: m is the only stored vector; g z is added into m by
    the noise's in-place pass (no copy of z), and z is regenerated from the seed.
    """

    name = "momentum"

    def __init__(self, params, *, eps, weight_decay=0.0, noise=None, momentum: float = 0.9):
        super().__init__(params, eps=eps, weight_decay=weight_decay, noise=noise)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.mu = float(momentum)
        self.buf = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.params]

    def state_tensors(self):
        return {"momentum_buffer": self.buf}

    def _step(self, loss_fn, seed, lr):
        st = self._spsa(loss_fn, seed)
        if st.skipped:
            return st
        for b, p, w in zip(self.buf, self.params, self.weight_decay):
            b.mul_(self.mu)
            if w:
                b.add_(p, alpha=w)
        add_z_into_(self.noise, self.params, self.buf, seed, st.grad)
        for p, b in zip(self.params, self.buf):
            p.add_(b, alpha=-lr)
        return st


class ZOAdam(ZOMethod):
    """ZO-Adam: Adam on the SPSA gradient g z; state = first and second moments (2 x numel).

    Source: ZO-Bench (Zhang et al. 2024), code ``zo-bench/trainer.py`` (trainer ``zo_adam``), which
    steps ``torch.optim.Adam(lr)`` with its defaults: beta1 0.9, beta2 0.999, eps 1e-8, bias
    correction, coupled weight decay (ZO-Bench: 0). Per parameter, with k = number of updates:
    m <- beta1 m + (1 - beta1) G; v <- beta2 v + (1 - beta2) G^2 (G = g z + wd theta);
    theta <- theta - lr / (1 - beta1^k) * m / (sqrt(v) / sqrt(1 - beta2^k) + adam_eps).
    z is drawn parameter by parameter (GaussianParamNoise) since v needs z elementwise; the peak
    transient is one parameter's z.
    """

    name = "adam"

    def __init__(self, params, *, eps, weight_decay=0.0, noise=None, beta1: float = 0.9,
                 beta2: float = 0.999, adam_eps: float = 1e-8):
        super().__init__(params, eps=eps, weight_decay=weight_decay, noise=noise)
        if not isinstance(self.noise, ParamNoise):
            raise ValueError("ZO-Adam needs a per-parameter noise (zo_noise.ParamNoise)")
        for nm, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{nm} must be in [0, 1), got {b}")
        self.beta1, self.beta2, self.adam_eps = float(beta1), float(beta2), float(adam_eps)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.params]
        self.k = 0

    def default_noise(self):
        return GaussianParamNoise()

    def state_tensors(self):
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def extra_state(self):
        return {"k": self.k}

    def load_extra_state(self, state):
        self.k = int(state["k"])

    def _step(self, loss_fn, seed, lr):
        st = self._spsa(loss_fn, seed)
        if st.skipped:
            return st
        self.k += 1
        b1, b2 = self.beta1, self.beta2
        step_size = lr / (1.0 - b1 ** self.k)
        bc2_sqrt = math.sqrt(1.0 - b2 ** self.k)
        for i, (p, m, v, w) in enumerate(zip(self.params, self.exp_avg, self.exp_avg_sq, self.weight_decay)):
            grad = self.noise.z(p, i, seed).mul_(st.grad)
            if w:
                grad.add_(p, alpha=w)
            m.lerp_(grad, 1.0 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
            p.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(self.adam_eps), value=-step_size)
        return st


class HiZOO(ZOMethod):
    """HiZOO: SPSA along Sigma^{1/2} z with a diagonal Hessian estimate; 3 forwards; one state vector.

    Source: Zhao et al. 2024, "Second-Order Fine-Tuning without Pain for LLMs: A Hessian Informed
    Zeroth-Order Optimizer" (HiZOO, arXiv 2402.15173), code Yanjun-Zhao/HiZOO. The step:
      l0 = L(theta); l+- = L(theta +- eps Sigma^{1/2} z);  (theta restored), c = |l+ + l- - 2 l0| / (2 eps^2)
    then the diagonal update and theta <- theta - lr ((l+ - l-) / (2 eps) Sigma^{1/2} z + wd theta)
    with the *updated* Sigma. Two forms of the diagonal update exist in the public code:
    * ``form="paper"`` (default): the state is H = Sigma^{-1}, the Hessian diagonal (ones at start);
      perturbation z / sqrt(H); H <- (1 - alpha) H + alpha c H z^2; update uses z / sqrt(H).
      This is the paper's Algorithm 1 (Sigma^{-1} <- (1 - alpha) Sigma^{-1} + alpha c
      Sigma^{-1/2} z z^T Sigma^{-1/2}, diagonal) and the repo's current ``trainer.py``
      (``zo_Hessian_step_update``, 2025).
    * ``form="code2024"``: the RoBERTa fork ``medium_models/src/trainer.py`` (Jan 2024): the state
      S multiplies z by sqrt(S) and is updated as S <- (1 - alpha) S + alpha c z^2 / S. (As
      published that file passes an undefined name ``seed`` to its perturbation and cannot run;
      here the step's seed is used.)
    alpha is the smoothing constant (``Hessian_smooth_type constant1e-6`` for RoBERTa-large full
    fine-tuning in the medium_models README; 1e-10 with LoRA). Weight decay applies to every
    parameter in that code. Not reproduced: the code runs a fourth forward after the update only
    to log its loss; the paper's step is three forwards, as here.
    """

    name = "hizoo"
    forwards_per_step = 3
    FORMS = ("paper", "code2024")

    def __init__(self, params, *, eps, weight_decay=0.0, noise: Optional[ParamNoise] = None, alpha: float = 1e-6,
                 form: str = "paper"):
        super().__init__(params, eps=eps, weight_decay=weight_decay, noise=noise)
        if not isinstance(self.noise, ParamNoise):
            raise ValueError("HiZOO needs a per-parameter noise (zo_noise.ParamNoise)")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if form not in self.FORMS:
            raise ValueError(f"HiZOO form must be one of {self.FORMS}, got {form!r}")
        self.alpha, self.form = float(alpha), form
        self.diag = [torch.ones_like(p, memory_format=torch.contiguous_format) for p in self.params]
        self.scaled = ScaledNoise(self.noise, self.sqrt_sigma)

    def default_noise(self):
        return GaussianParamNoise()

    def sqrt_sigma(self, i: int) -> torch.Tensor:
        """Sigma_i^{1/2}, the elementwise factor of z (H^{-1/2} in the paper form)."""
        return self.diag[i].rsqrt() if self.form == "paper" else self.diag[i].sqrt()

    def state_tensors(self):
        return {"hessian" if self.form == "paper" else "sigma": self.diag}

    def _step(self, loss_fn, seed, lr):
        l0 = float(loss_fn())
        st = self._spsa(loss_fn, seed, noise=self.scaled)
        if st.skipped or not math.isfinite(l0):
            return st._replace(skipped=True)
        c = abs(st.loss_plus + st.loss_minus - 2.0 * l0) / (2.0 * self.eps * self.eps)
        for i, (p, d, w) in enumerate(zip(self.params, self.diag, self.weight_decay)):
            z = self.noise.z(p, i, seed)
            est = z * z * d if self.form == "paper" else z * z / d     # with the old diagonal
            d.mul_(1.0 - self.alpha).add_(est, alpha=self.alpha * c)
            upd = z.mul_(self.sqrt_sigma(i)).mul_(st.grad)
            if w:
                upd.add_(p, alpha=w)
            p.sub_(upd, alpha=lr)
        return st


class LOZO(ZOMethod):
    """LOZO (and LOZO-M with ``beta1``): SPSA along low-rank directions U V^T, V kept for nu steps.

    Source: Chen et al. 2025, "Enhancing Zeroth-order Fine-tuning for Language Models with
    Low-rank Structures" (ICLR 2025), code optsuite/LOZO ``medium_models/src/LOZOtrainer.py``
    (``lowrank_zo_perturb_parameters``, ``lowrank_zo_update``, ``lowrank_zo_update_momentum``):
    * every parameter with ndim >= 2 (all weight matrices, the embeddings included) is perturbed
      by U V^T, U (m x r) Gaussian drawn every step, V (n x r) Gaussian drawn at steps t with
      t mod nu == 0 (t counts from 0) and kept in between; vectors (biases, LayerNorm) by a
      Gaussian z every step. No 1/r or other normalisation of U V^T in the code.
    * LOZO: theta <- theta - lr (g U V^T + wd theta) (vectors: g z): ``zo.mezo_step`` fused.
    * LOZO-M (beta1 given): a momentum M (m x r) per matrix in the U-space, as coded:
      at t mod nu == 0: M <- beta1 M V_old^T V / n + (1 - beta1) g U if a previous V exists
      (n = rows of V_old), else M <- g U; otherwise M <- beta1 M + (1 - beta1) g U; at
      t mod nu == nu - 1 (nu > 1) the current V becomes V_old. Update theta -= lr (M V^T + wd theta).
      Vectors: m <- g z at t == 0, else beta1 m + (1 - beta1) g z; theta -= lr (m + wd theta).
    The code exempts names containing "bias", "layer_norm", "layernorm" from weight decay (its
    RoBERTa runs use wd 0); here the caller's per-parameter weight decay is applied.
    V is regenerated from the seed of the step that resampled it (state: t, that seed, M, m).
    """

    name = "lozo"

    def __init__(self, params, *, eps, weight_decay=0.0, noise: Optional[LowRankNoise] = None,
                 rank: int = 4, nu: int = 50, beta1: Optional[float] = None):
        super().__init__(params, eps=eps, weight_decay=weight_decay,
                         noise=noise if noise is not None else LowRankNoise(rank))
        if not isinstance(self.noise, LowRankNoise):
            raise ValueError("LOZO needs a zo_noise.LowRankNoise")
        if nu < 1:
            raise ValueError(f"nu must be >= 1, got {nu}")
        self.nu = int(nu)
        self.beta1 = None if beta1 is None else float(beta1)
        if self.beta1 is not None:
            if not 0.0 <= self.beta1 < 1.0:
                raise ValueError(f"beta1 must be in [0, 1), got {beta1}")
            self.name = "lozo_m"
            self.mom = [torch.zeros(p.shape[0], self.noise.rank, dtype=p.dtype, device=p.device)
                        if LowRankNoise.is_matrix(p) else torch.zeros_like(p) for p in self.params]
        self.v_old_seed: Optional[int] = None

    @property
    def rank(self) -> int:
        return self.noise.rank

    def state_tensors(self):
        return {} if self.beta1 is None else {"momentum": self.mom}

    def extra_state(self):
        return {"v_seed": self.noise.v_seed, "v_old_seed": self.v_old_seed}

    def load_extra_state(self, state):
        if state["v_seed"] is not None:
            self.noise.set_v_seed(state["v_seed"])
        self.v_old_seed = state["v_old_seed"]

    def state_numel(self) -> int:
        """M / m plus the V matrices in use (n r per matrix; regenerable from the seed)."""
        v = sum(p.numel() // p.shape[0] * self.rank for p in self.params if LowRankNoise.is_matrix(p))
        return super().state_numel() + v

    def _step(self, loss_fn, seed, lr):
        if self.t % self.nu == 0 or self.noise.v_seed is None:
            self.noise.set_v_seed(seed)           # a new V, drawn from this step's seed
        if self.beta1 is None:
            return zo.mezo_step(self.params, loss_fn, self.noise, seed, eps=self.eps, lr=lr,
                                weight_decay=self.weight_decay)
        st = self._spsa(loss_fn, seed)
        if st.skipped:
            return st
        self._momentum_update(seed, st.grad, lr)
        return st

    def _momentum_update(self, seed, g, lr):
        b, phase = self.beta1, self.t % self.nu
        nz = self.noise
        for i, (p, mom, w) in enumerate(zip(self.params, self.mom, self.weight_decay)):
            if LowRankNoise.is_matrix(p):
                u, v = nz.u_of(p, i, seed), nz.v_of(p, i)
                if phase == 0:
                    if self.v_old_seed is not None:
                        v_old = nz.v_of(p, i, self.v_old_seed)
                        mom.copy_(b * (mom @ v_old.t() @ v) / v_old.shape[0] + (1.0 - b) * g * u)
                    else:
                        mom.copy_(g * u)
                else:
                    mom.mul_(b).add_(u, alpha=(1.0 - b) * g)
                if p.is_contiguous():   # p -= lr (M Vᵀ + w p) without materialising M Vᵀ (m x n)
                    if w:
                        p.add_(p, alpha=-lr * w)
                    p.view(p.shape[0], -1).addmm_(mom, v.t(), alpha=-lr)
                    continue
                step = (mom @ v.t()).reshape(p.shape)
            else:
                z = nz.z(p, i, seed)
                if self.t == 0:
                    mom.copy_(z.mul_(g))
                else:
                    mom.mul_(b).add_(z, alpha=(1.0 - b) * g)
                step = mom.clone()
            if w:
                step.add_(p, alpha=w)
            p.sub_(step, alpha=lr)
        if phase == self.nu - 1 and phase != 0:
            self.v_old_seed = nz.v_seed


class FZOO(ZOMethod):
    """FZOO: N one-sided Rademacher estimates, step normalised by the spread of their losses.

    Source: Dang et al. 2025, "FZOO: Fast Zeroth-Order Optimizer for Fine-Tuning Large Language
    Models towards Adam-Scale Speed" (arXiv 2506.09034). The update as the paper states it:
      l0 = L(theta); l_i = L(theta + eps u_i), u_i Rademacher, i = 1..N;
      g = 1 / (eps N) sum_i (l_i - l0) u_i;  sigma = std(l_1..l_N) (N - 1 in the denominator);
      theta <- theta - lr (g / sigma + wd theta).
    The public code (DKmiyan/FZOO ``trainer.py::zo_step`` / ``zo_update``) differs in two places:
    it does not divide by eps (theta -= lr / (N sigma) sum_i (l_i - l0) u_i) and its sigma has N in
    the denominator (``torch.std(unbiased=False)``); so its lr equals lr_here / (eps sqrt(N / (N - 1))).
    It has no weight decay, evaluates l0 after the l_i, and loops over the N forwards. A step with
    sigma = 0 or a non-finite loss is skipped.
    The N perturbed losses come from, in order: ``batched_losses(noise, params, seeds, eps)`` if
    given; else ``loss_fn.perturbed_losses(...)`` if the loss function has one and it does not
    return None (src/mezo/fzoo_batched.py: one vmapped forward, ``--fzoo_batched``); else the
    sequential loop. All must give the same numbers. u_i is keyed by sub_seed(seed, i). No state.
    Forwards: N + 1.
    """

    name = "fzoo"

    def __init__(self, params, *, eps, weight_decay=0.0, noise: Optional[ParamNoise] = None, n: int = 8,
                 batched_losses: Optional[Callable] = None):
        super().__init__(params, eps=eps, weight_decay=weight_decay, noise=noise)
        if n < 2:
            raise ValueError(f"FZOO needs N >= 2 estimates (a standard deviation), got {n}")
        if not isinstance(self.noise, RademacherNoise):
            raise ValueError("FZOO's directions are Rademacher (zo_noise.RademacherNoise)")
        self.n = int(n)
        self.batched_losses = batched_losses

    def default_noise(self):
        return RademacherNoise()

    @property
    def forwards_per_step(self) -> int:
        return self.n + 1

    def direction_seeds(self, seed: int) -> List[int]:
        return [sub_seed(seed, k, b"fzoo-dir") for k in range(self.n)]

    def _perturbed_losses(self, loss_fn, seeds) -> List[float]:
        if self.batched_losses is not None:
            return [float(x) for x in self.batched_losses(self.noise, self.params, seeds, self.eps)]
        # a loss_fn may evaluate the N losses itself in one batched forward (src/mezo/fzoo_batched.py);
        # None means it cannot (it fell back), and the sequential loop below gives the same numbers
        batched = getattr(loss_fn, "perturbed_losses", None)
        out = None if batched is None else batched(self.noise, self.params, seeds, self.eps)
        if out is not None:
            return [float(x) for x in out]
        out = []
        for s in seeds:
            self.noise.add_(self.params, s, self.eps)
            try:
                out.append(float(loss_fn()))
            finally:
                self.noise.add_(self.params, s, -self.eps)
        return out

    def _step(self, loss_fn, seed, lr):
        l0 = float(loss_fn())
        seeds = self.direction_seeds(seed)
        ls = self._perturbed_losses(loss_fn, seeds)
        sigma = float(np.std(ls, ddof=1)) if all(map(math.isfinite, ls)) else float("nan")
        if not (math.isfinite(l0) and math.isfinite(sigma) and sigma > 0):
            return _skipped(l0, float(np.mean(ls)), float("nan"))
        coef = lr / (sigma * self.eps * self.n)
        decays = [-lr * w for w in self.weight_decay]
        for k, (s, li) in enumerate(zip(seeds, ls)):
            if k == 0:
                self.noise.decay_add_(self.params, s, decays, -coef * (li - l0))
            else:
                self.noise.add_(self.params, s, -coef * (li - l0))
        return ZOStep(l0, float(np.mean(ls)), sigma, False)


class VmapLosses:
    """FZOO's batched evaluation: the N perturbed losses in one vmapped forward (``torch.func``).

    ``loss_of(params_dict) -> loss`` runs the model functionally (``torch.func.functional_call``).
    Stacked copy k of parameter i is theta_i + eps u_k, made as the sequential loop makes it
    (``add_(z, alpha=eps)``), so both paths see the same perturbed numbers. Memory: N copies of
    the trainable parameters and activations of N times the batch, so this suits small parameter
    sets (heads, adapters, prefixes); src/mezo/fzoo_batched.py decides when the Trainer uses it.
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


METHODS = {
    "mezo": MeZO, "sign": ZOSGDSign, "conservative": ZOSGDConservative, "momentum": ZOSGDMomentum,
    "adam": ZOAdam, "hizoo": HiZOO, "lozo": LOZO, "lozo_m": LOZO, "fzoo": FZOO,
}


def build_method(name: str, params, *, eps: float, weight_decay=0.0, **hp) -> ZOMethod:
    """The method ``name`` (a key of METHODS) with its hyper-parameters (the constructor's names).

    ``lozo_m`` is LOZO with momentum (``beta1`` defaults to 0.9, the repo's BETA1).
    """
    if name not in METHODS:
        raise ValueError(f"unknown zo method {name!r} (one of {', '.join(METHODS)})")
    if name == "lozo_m":
        hp.setdefault("beta1", 0.9)
    elif name == "lozo" and hp.get("beta1") is not None:
        raise ValueError("lozo takes no beta1; use lozo_m for LOZO-M")
    return METHODS[name](params, eps=eps, weight_decay=weight_decay, **hp)
