"""The zeroth-order optimizers: MeZO and the methods that followed it, each on the one SPSA step.

Each is a ``torch.optim.Optimizer`` (``mezo.zo.optim.ZeroOrderOptimizer``): build it over
parameters or param groups, call ``step(closure)`` with a closure that returns the loss.

    opt = HiZOO(model.parameters(), lr=1e-6, eps=1e-3, alpha=1e-6, seed=0)
    for batch in loader:
        opt.step(lambda: model(**batch).loss)

Where a method is an SPSA variant it *is* ``mezo.zo.step.mezo_step``: either with a new kind of
direction (a noise of ``mezo.zo.noise``: LOZO's U V^T, HiZOO's Sigma^{1/2} z) and the fused
update, or with ``lr=0`` (perturb, two losses, restore) followed by the method's own update pass.
Directions are regenerated from the seed in every pass, never stored. Each method declares its
hyper-parameters (``hyper``) next to its code; they are param-group entries like ``lr``.
Weight decay is per group; each method applies it where its source does.
"""
import math
from typing import Callable, Dict, List, Optional, Type

import numpy as np
import torch

from mezo.zo.hparams import HParam
from mezo.zo.noise import GaussianParamNoise, LowRankNoise, ParamNoise, RademacherNoise, ScaledNoise, sub_seed
from mezo.zo.optim import ZeroOrderOptimizer, finite_or_inf
from mezo.zo.step import Noise, ZOStep, guarded_loss, mezo_step


def _skipped(loss_plus=float("nan"), loss_minus=float("nan"), grad=float("nan")) -> ZOStep:
    return ZOStep(float(loss_plus), float(loss_minus), float(grad), True)


@torch.no_grad()
def add_z_into_(noise: Noise, params, targets, seed: int, scales) -> None:
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
        if o is not t:      # a noise that rebinds .grad (mezo.zo.step.PlainNoise) instead of adding in place
            t.copy_(o)



class MeZO(ZeroOrderOptimizer):
    """MeZO (Malladi et al. 2023, Algorithm 1): ``mezo_step`` with its fused update; no state.

    The only method that honours the per-group ``pert``, ``upd`` and ``active`` entries (block
    scaling of ``--zo_variant``, ``--layer_wise_optim``: the Trainer sets them before a step).
    """

    name = "mezo"
    scalable = True

    def _step(self, closure, seed):
        return mezo_step(self.params, closure, self.noise, seed, eps=self.eps, lr=self.per_param("lr"),
                         weight_decay=self.per_param("weight_decay"), pert=self.per_param("pert"),
                         upd=self.per_param("upd"))

    def _spsa(self, closure, seed, noise=None) -> ZOStep:
        """The SPSA pair with lr 0: perturb, two losses, restore theta; returns g."""
        return mezo_step(self.params, closure, noise or self.noise, seed, eps=self.eps)


ZeroOrderSGD = MeZO   # the name of the earlier own-loop wrapper


class ZOSGDSign(MeZO):
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
    scalable = False
    hyper = {"elementwise": HParam(False, "zo_sign_elementwise", "--zo_method sign: update with sign(g z) per "
                                   "coordinate instead of sign(g) z", choices=(False, True))}
    uniform = ("elementwise",)

    def default_noise(self):
        return GaussianParamNoise() if self.hp("elementwise") else super().default_noise()

    def check_groups(self):
        super().check_groups()
        if self.hp("elementwise") and not isinstance(self.noise, ParamNoise):
            raise ValueError("elementwise ZO-SGD-Sign needs a per-parameter noise (mezo.zo.noise.ParamNoise)")

    def _step(self, closure, seed):
        st = self._spsa(closure, seed)
        if st.skipped:
            return st
        sg = float(np.sign(st.grad))
        params, lr, wd = self.params, self.per_param("lr"), self.per_param("weight_decay")
        if not self.hp("elementwise"):
            self.noise.decay_add_(params, seed, [-r * w for r, w in zip(lr, wd)], [-r * sg for r in lr])
            return st
        for i, (p, r, w) in enumerate(zip(params, lr, wd)):
            upd = self.noise.z(p, i, seed).sign_().mul_(sg)
            if w:
                upd.add_(p, alpha=w)
            p.sub_(upd, alpha=r)
        return st


class ZOSGDConservative(MeZO):
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
    scalable = False
    forwards_per_step = 5

    def check_groups(self):
        super().check_groups()
        if any(g["weight_decay"] for g in self.param_groups):
            raise ValueError("ZO-SGD-Cons is defined without weight decay; use --weight_decay 0")

    def _step(self, closure, seed):
        self.last_choice = None
        l0 = finite_or_inf(closure())
        st = self._spsa(closure, seed)
        if st.skipped:
            return st
        params, noise = self.params, self.noise
        c = [r * st.grad for r in self.per_param("lr")]
        neg = [-x for x in c]
        noise.add_(params, seed, neg)                     # theta - lr g z
        l1 = finite_or_inf(guarded_loss(closure, lambda: noise.add_(params, seed, c)))
        noise.add_(params, seed, [2.0 * x for x in c])    # theta + lr g z
        l2 = finite_or_inf(guarded_loss(closure, lambda: noise.add_(params, seed, neg)))
        if l1 > l0:
            if l0 < l2:
                noise.add_(params, seed, neg)             # back to theta
                self.last_choice = "theta"
            else:
                self.last_choice = "plus"
        elif l1 < l2:
            noise.add_(params, seed, [-2.0 * x for x in c])   # theta - lr g z
            self.last_choice = "minus"
        else:
            self.last_choice = "plus"
        return st


class ZOSGDMomentum(MeZO):
    """ZO-SGD-MMT: heavy-ball momentum on the SPSA gradient; state = one buffer m (numel of the params).

    Source: ZO-Bench (Zhang et al. 2024), code ``zo-bench/trainer.py::zo_step`` with trainer
    ``zo_sgd`` and ``--momentum 0.9``, which steps ``torch.optim.SGD(momentum=mu)`` (dampening 0,
    no Nesterov): m <- mu m + (g z + wd theta) (m = g z + wd theta at the first step),
    theta <- theta - lr m. Memory-efficient: m is the only stored vector; g z is added into m by
    the noise's in-place pass (no copy of z), and z is regenerated from the seed.
    """

    name = "momentum"
    scalable = False
    hyper = {"momentum": HParam(0.9, "zo_momentum", "--zo_method momentum: heavy-ball momentum (ZO-Bench: 0.9)",
                                lo=0, hi=1, hi_open=True)}

    def init_state(self, p):
        return {"momentum_buffer": torch.zeros_like(p, memory_format=torch.contiguous_format)}

    def _step(self, closure, seed):
        st = self._spsa(closure, seed)
        if st.skipped:
            return st
        params = self.params
        bufs = [self.state_of(p)["momentum_buffer"] for p in params]
        for b, p, mu, w in zip(bufs, params, self.per_param("momentum"), self.per_param("weight_decay")):
            b.mul_(mu)
            if w:
                b.add_(p, alpha=w)
        add_z_into_(self.noise, params, bufs, seed, st.grad)
        for p, b, r in zip(params, bufs, self.per_param("lr")):
            p.add_(b, alpha=-r)
        return st


class ZOAdam(MeZO):
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
    scalable = False
    hyper = {"beta1": HParam(0.9, "adam_beta1", "", lo=0, hi=1, hi_open=True, shared=True),
             "beta2": HParam(0.999, "adam_beta2", "", lo=0, hi=1, hi_open=True, shared=True),
             "adam_eps": HParam(1e-8, "adam_epsilon", "", lo=0, shared=True)}

    def default_noise(self):
        return GaussianParamNoise()

    def check_groups(self):
        super().check_groups()
        if not isinstance(self.noise, ParamNoise):
            raise ValueError("ZO-Adam needs a per-parameter noise (mezo.zo.noise.ParamNoise)")
        for g in self.param_groups:
            for k in ("beta1", "beta2"):
                if not 0.0 <= g[k] < 1.0:
                    raise ValueError(f"{k} must be in [0, 1), got {g[k]}")

    def init_state(self, p):
        return {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p, memory_format=torch.contiguous_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.contiguous_format)}

    def _step(self, closure, seed):
        st = self._spsa(closure, seed)
        if st.skipped:
            return st
        hp = [(g, p) for g in self.active_groups() for p in g["params"] if p.requires_grad]
        for i, (g, p) in enumerate(hp):
            s = self.state_of(p)
            s["step"] += 1
            k = int(s["step"].item())
            b1, b2 = g["beta1"], g["beta2"]
            step_size = g["lr"] / (1.0 - b1 ** k)
            bc2_sqrt = math.sqrt(1.0 - b2 ** k)
            grad = self.noise.z(p, i, seed).mul_(st.grad)
            if g["weight_decay"]:
                grad.add_(p, alpha=g["weight_decay"])
            s["exp_avg"].lerp_(grad, 1.0 - b1)
            s["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
            p.addcdiv_(s["exp_avg"], (s["exp_avg_sq"].sqrt() / bc2_sqrt).add_(g["adam_eps"]), value=-step_size)
        return st


class HiZOO(MeZO):
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
    scalable = False
    forwards_per_step = 3
    FORMS = ("paper", "code2024")
    hyper = {"alpha": HParam(1e-6, "hizoo_alpha", "--zo_method hizoo: smoothing constant of the diagonal "
                             "Hessian estimate", lo=0, hi=1),
             "form": HParam("paper", "hizoo_form", "--zo_method hizoo: the paper's Sigma update, or code2024 (the "
                            "2024 RoBERTa fork's)", choices=FORMS)}
    uniform = ("form",)

    def default_noise(self):
        return GaussianParamNoise()

    def check_groups(self):
        super().check_groups()
        if not isinstance(self.noise, ParamNoise):
            raise ValueError("HiZOO needs a per-parameter noise (mezo.zo.noise.ParamNoise)")
        for g in self.param_groups:
            if not 0.0 <= g["alpha"] <= 1.0:
                raise ValueError(f"alpha must be in [0, 1], got {g['alpha']}")
        if self.hp("form") not in self.FORMS:
            raise ValueError(f"HiZOO form must be one of {self.FORMS}, got {self.hp('form')!r}")

    @property
    def diag_key(self) -> str:
        return "hessian" if self.hp("form") == "paper" else "sigma"

    def init_state(self, p):
        return {self.diag_key: torch.ones_like(p, memory_format=torch.contiguous_format)}

    def sqrt_sigma(self, d: torch.Tensor) -> torch.Tensor:
        """Sigma^{1/2}, the elementwise factor of z (H^{-1/2} in the paper form)."""
        return d.rsqrt() if self.hp("form") == "paper" else d.sqrt()

    def _step(self, closure, seed):
        params = self.params
        diag = [self.state_of(p)[self.diag_key] for p in params]
        l0 = float(closure())
        st = self._spsa(closure, seed, noise=ScaledNoise(self.noise, lambda i: self.sqrt_sigma(diag[i])))
        if st.skipped or not math.isfinite(l0):
            return st._replace(skipped=True)
        c = abs(st.loss_plus + st.loss_minus - 2.0 * l0) / (2.0 * self.eps * self.eps)
        paper = self.hp("form") == "paper"
        for i, (p, d, a, r, w) in enumerate(zip(params, diag, self.per_param("alpha"), self.per_param("lr"),
                                                self.per_param("weight_decay"))):
            z = self.noise.z(p, i, seed)
            est = z * z * d if paper else z * z / d     # with the old diagonal
            d.mul_(1.0 - a).add_(est, alpha=a * c)
            upd = z.mul_(self.sqrt_sigma(d)).mul_(st.grad)
            if w:
                upd.add_(p, alpha=w)
            p.sub_(upd, alpha=r)
        return st


class LOZO(MeZO):
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
    scalable = False
    hyper = {"rank": HParam(4, "lozo_rank", "--zo_method lozo/lozo_m: rank r of the U V^T perturbations",
                            lo=1, integer=True),
             "nu": HParam(50, "lozo_nu", "--zo_method lozo/lozo_m: V is redrawn every nu steps", lo=1, integer=True)}
    uniform = ("rank", "nu")

    def default_noise(self):
        return LowRankNoise(int(self.hp("rank")))

    def check_groups(self):
        super().check_groups()
        if not isinstance(self.noise, LowRankNoise):
            raise ValueError("LOZO needs a mezo.zo.noise.LowRankNoise")
        if self.hp("nu") < 1:
            raise ValueError(f"nu must be >= 1, got {self.hp('nu')}")
        if self.hp("rank") < 1:
            raise ValueError(f"rank must be >= 1, got {self.hp('rank')}")

    def __init__(self, params, lr=1e-6, eps=1e-3, weight_decay=0.0, **kw):
        super().__init__(params, lr, eps, weight_decay, **kw)
        self.v_old_seed: Optional[int] = None

    @property
    def rank(self) -> int:
        return self.noise.rank

    @property
    def nu(self) -> int:
        return int(self.hp("nu"))

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

    def _step(self, closure, seed):
        if self.t % self.nu == 0 or self.noise.v_seed is None:
            self.noise.set_v_seed(seed)           # a new V, drawn from this step's seed
        return mezo_step(self.params, closure, self.noise, seed, eps=self.eps, lr=self.per_param("lr"),
                         weight_decay=self.per_param("weight_decay"))


class LOZOM(LOZO):
    """LOZO-M: LOZO with momentum ``beta1`` in the U space (see ``LOZO``)."""

    name = "lozo_m"
    hyper = {**LOZO.hyper, "beta1": HParam(0.9, "lozo_beta1", "--zo_method lozo_m: momentum in the U space",
                                           lo=0, hi=1, hi_open=True)}

    def check_groups(self):
        super().check_groups()
        for g in self.param_groups:
            if not 0.0 <= g["beta1"] < 1.0:
                raise ValueError(f"beta1 must be in [0, 1), got {g['beta1']}")

    def init_state(self, p):
        shape = (p.shape[0], self.rank) if LowRankNoise.is_matrix(p) else p.shape
        return {"momentum_buffer": torch.zeros(shape, dtype=p.dtype, device=p.device)}

    def _step(self, closure, seed):
        if self.t % self.nu == 0 or self.noise.v_seed is None:
            self.noise.set_v_seed(seed)
        st = self._spsa(closure, seed)
        if st.skipped:
            return st
        self._momentum_update(seed, st.grad)
        return st

    def _momentum_update(self, seed, g):
        phase, nz = self.t % self.nu, self.noise
        params = self.params
        for i, (p, b, r, w) in enumerate(zip(params, self.per_param("beta1"), self.per_param("lr"),
                                             self.per_param("weight_decay"))):
            mom = self.state_of(p)["momentum_buffer"]
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
                        p.add_(p, alpha=-r * w)
                    p.view(p.shape[0], -1).addmm_(mom, v.t(), alpha=-r)
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
            p.sub_(step, alpha=r)
        if phase == self.nu - 1 and phase != 0:
            self.v_old_seed = nz.v_seed


class FZOO(MeZO):
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
    return None (mezo.training.fzoo_batched: one vmapped forward, ``--fzoo_batched``); else the
    sequential loop. All must give the same numbers. u_i is keyed by sub_seed(seed, i). No state.
    Forwards: N + 1.
    """

    name = "fzoo"
    scalable = False
    hyper = {"n": HParam(8, "fzoo_n", "--zo_method fzoo: N one-sided Rademacher estimates per step (no "
                         "published default)", lo=2, integer=True)}
    uniform = ("n",)

    def __init__(self, params, lr=1e-6, eps=1e-3, weight_decay=0.0, *, batched_losses: Optional[Callable] = None,
                 **kw):
        super().__init__(params, lr, eps, weight_decay, **kw)
        self.batched_losses = batched_losses

    def default_noise(self):
        return RademacherNoise()

    def check_groups(self):
        super().check_groups()
        if self.hp("n") < 2:
            raise ValueError(f"FZOO needs N >= 2 estimates (a standard deviation), got {self.hp('n')}")
        if not isinstance(self.noise, RademacherNoise):
            raise ValueError("FZOO's directions are Rademacher (mezo.zo.noise.RademacherNoise)")

    @property
    def n(self) -> int:
        return int(self.hp("n"))

    @property
    def forwards_per_step(self) -> int:
        return self.n + 1

    def direction_seeds(self, seed: int) -> List[int]:
        return [sub_seed(seed, k, b"fzoo-dir") for k in range(self.n)]

    def _perturbed_losses(self, closure, seeds) -> List[float]:
        params = self.params
        if self.batched_losses is not None:
            return [float(x) for x in self.batched_losses(self.noise, params, seeds, self.eps)]
        # a closure may evaluate the N losses itself in one batched forward (mezo.training.fzoo_batched);
        # None means it cannot (it fell back), and the sequential loop below gives the same numbers
        batched = getattr(closure, "perturbed_losses", None)
        out = None if batched is None else batched(self.noise, params, seeds, self.eps)
        if out is not None:
            return [float(x) for x in out]
        out = []
        for s in seeds:
            self.noise.add_(params, s, self.eps)
            try:
                out.append(float(closure()))
            finally:
                self.noise.add_(params, s, -self.eps)
        return out

    def _step(self, closure, seed):
        params = self.params
        l0 = float(closure())
        seeds = self.direction_seeds(seed)
        ls = self._perturbed_losses(closure, seeds)
        sigma = float(np.std(ls, ddof=1)) if all(map(math.isfinite, ls)) else float("nan")
        if not (math.isfinite(l0) and math.isfinite(sigma) and sigma > 0):
            return _skipped(l0, float(np.mean(ls)), float("nan"))
        lr = self.per_param("lr")
        coef = [r / (sigma * self.eps * self.n) for r in lr]
        decays = [-r * w for r, w in zip(lr, self.per_param("weight_decay"))]
        for k, (s, li) in enumerate(zip(seeds, ls)):
            if k == 0:
                self.noise.decay_add_(params, s, decays, [-c * (li - l0) for c in coef])
            else:
                self.noise.add_(params, s, [-c * (li - l0) for c in coef])
        return ZOStep(l0, float(np.mean(ls)), sigma, False)


OPTIMIZERS: Dict[str, Type[ZeroOrderOptimizer]] = {
    m.name: m for m in (MeZO, ZOSGDSign, ZOSGDConservative, ZOSGDMomentum, ZOAdam, HiZOO, LOZO, LOZOM, FZOO)}


def build(name: str, params, **kw) -> ZeroOrderOptimizer:
    """The optimizer ``name`` (a key of OPTIMIZERS) with its keyword arguments (lr, eps, hyper-parameters)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown zo method {name!r} (one of {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[name](params, **kw)
