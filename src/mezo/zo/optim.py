"""The base of every zeroth-order optimizer: a ``torch.optim.Optimizer`` over the one SPSA step.

A zeroth-order optimizer looks like any torch optimizer: hyper-parameters live in
``param_groups`` (``lr``, ``eps``, ``weight_decay``, the perturbation/update scales ``pert`` and
``upd``, ``active``, and the method's own), per-parameter state in ``self.state[p]`` under
torch's names, and ``step(closure)`` runs one update and returns the loss. Two things differ:

* the closure only returns the loss (no ``backward``); it runs under ``torch.no_grad()`` and is
  called as often as the method needs (``forwards_per_step``); both SPSA losses and g are in
  ``opt.last`` (a ``ZOStep``);
* every step draws its seed from ``np.random.RandomState(seed)`` (one ``randint(10**9)`` a step,
  as the original), and that stream is part of ``state_dict()``, so a resumed run draws the same
  z as an uninterrupted one.

``step()`` without a closure right after a closure step does nothing: the Hugging Face loop calls
it once per update after ``training_step`` has run the update (``mezo.training.trainer``).
"""
import math
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from mezo.zo.backend import FastNoise
from mezo.zo.step import Noise, ZOStep

SEED_RANGE = 1_000_000_000


def random_state_to_tensors(rs: np.random.RandomState) -> list:
    """A NumPy generator's state in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = rs.get_state(legacy=True)
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def set_random_state(rs: np.random.RandomState, state) -> None:
    name, keys, pos, has_gauss, cached = state
    rs.set_state((name, keys.cpu().numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))


class SeedStream:
    """The step seeds: ``np.random.RandomState(seed).randint(10**9)``, one draw per use, with its state."""

    def __init__(self, seed: int = 0):
        self.rs = np.random.RandomState(seed)

    def __call__(self) -> int:
        return int(self.rs.randint(SEED_RANGE))

    def state_dict(self) -> list:
        return random_state_to_tensors(self.rs)

    def load_state_dict(self, state) -> None:
        set_random_state(self.rs, state)


class ZeroOrderOptimizer(torch.optim.Optimizer):
    """Common part of the zeroth-order optimizers; a subclass defines ``_step(closure, seed)``.

    ``hyper`` (class attribute): the method's own hyper-parameters and their defaults; they become
    param-group entries like ``lr``. ``uniform``: those that must be equal in every group (they
    shape the step, not one parameter's update). ``eps`` is always uniform: g divides by it.
    """

    name = "mezo"
    forwards_per_step = 2
    hyper: Dict[str, object] = {}
    uniform: tuple = ()
    scalable = False      # whether the method honours per-group pert / upd / active (MeZO's ablations)

    def __init__(self, params, lr: float = 1e-6, eps: float = 1e-3, weight_decay: float = 0.0, *,
                 seed: int = 0, noise: Optional[Noise] = None, **hyper):
        unknown = sorted(set(hyper) - set(self.hyper))
        if unknown:
            owners = sorted({c.name for c in _subclasses(ZeroOrderOptimizer) if unknown[0] in c.hyper})
            raise ValueError(f"{type(self).__name__} ({self.name}): unknown hyper-parameter(s) {', '.join(unknown)}"
                             + (f" ({unknown[0]} is one of {', '.join(owners)})" if owners else ""))
        defaults = dict(lr=lr, eps=eps, weight_decay=weight_decay, pert=1.0, upd=1.0, active=True,
                        **{**{k: h.default for k, h in self.hyper.items()}, **hyper})
        super().__init__(params, defaults)
        self.noise = noise if noise is not None else self.default_noise()
        self.check_groups()
        self.seeds = SeedStream(seed)
        self.t = 0                  # steps taken (skipped ones included)
        self.last: Optional[ZOStep] = None
        self._stepped = False       # a closure step ran since the last step()/zero_grad()

    # ----- configuration -------------------------------------------------------------------------
    def default_noise(self) -> Noise:
        return FastNoise()

    def check_groups(self) -> None:
        gs = self.param_groups
        if not self.params:
            raise ValueError(f"{type(self).__name__}: no parameters with requires_grad to optimise")
        for key in ("eps",) + tuple(self.uniform):
            if len({repr(g[key]) for g in gs}) > 1:
                raise ValueError(f"{type(self).__name__}: {key} must be the same in every param group")
        if not gs[0]["eps"] > 0:
            raise ValueError(f"eps must be > 0, got {gs[0]['eps']}")
        if not self.scalable and any(g["pert"] != 1.0 or g["upd"] != 1.0 or not g["active"] for g in gs):
            raise ValueError(f"{type(self).__name__}: per-group pert / upd / active are MeZO's (--zo_variant, "
                             "--layer_wise_optim)")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        if hasattr(self, "noise"):   # after __init__: the new group must agree with the others
            self.check_groups()

    @property
    def eps(self) -> float:
        return float(self.param_groups[0]["eps"])

    def hp(self, key: str):
        """A uniform hyper-parameter (the same in every group)."""
        return self.param_groups[0][key]

    def active_groups(self) -> List[dict]:
        return [g for g in self.param_groups if g["active"]]

    @property
    def params(self) -> List[torch.Tensor]:
        """The parameters a step perturbs, in group order: active groups, ``requires_grad`` only.

        z is keyed by the position in this list, so it is the same list on every step."""
        return [p for g in self.active_groups() for p in g["params"] if p.requires_grad]

    def per_param(self, key: str) -> list:
        """The group value ``key`` for each parameter of ``params``."""
        return [float(g[key]) for g in self.active_groups() for p in g["params"] if p.requires_grad]

    # ----- the step ------------------------------------------------------------------------------
    def next_seed(self) -> int:
        return self.seeds()

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None, *, seed: Optional[int] = None):
        """One update; ``closure()`` returns the loss at the current parameters.

        Returns the loss the original logs (loss at theta + eps z; nan if the step was skipped for a
        non-finite loss). ``seed`` overrides the stream's next seed (the stream does not advance).
        """
        if closure is None:
            if self._stepped:
                self._stepped = False
                return None
            raise RuntimeError(f"{type(self).__name__}.step() needs a closure that returns the loss")
        seed = self.next_seed() if seed is None else int(seed)
        self.last = self._step(closure, seed)
        self.t += 1
        self._stepped = True
        return float("nan") if self.last.skipped else self.last.loss_plus

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._stepped = False
        super().zero_grad(set_to_none)

    def _step(self, closure, seed: int) -> ZOStep:
        raise NotImplementedError

    # ----- state ---------------------------------------------------------------------------------
    def init_state(self, p: torch.Tensor) -> dict:
        """A parameter's state before its first update (torch's names: momentum_buffer, exp_avg, ...)."""
        return {}

    def state_of(self, p: torch.Tensor) -> dict:
        st = self.state[p]
        if not st:
            st.update(self.init_state(p))
        return st

    def extra_state(self) -> dict:
        """Optimizer-level state beyond the seed stream and the step count (LOZO's V seeds)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_numel(self) -> int:
        """Numbers the method stores across steps (MeZO: 0)."""
        return sum(t.numel() for p in self.params for k, t in self.state_of(p).items()
                   if torch.is_tensor(t) and k != "step")

    def state_dict(self) -> dict:
        out = super().state_dict()
        out["zo"] = {"method": self.name, "seeds": self.seeds.state_dict(), "t": self.t, **self.extra_state()}
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        zo = state_dict.pop("zo", None)
        if zo is None or zo.get("method") != self.name:
            raise ValueError(f"{type(self).__name__}.load_state_dict: not the state of a {self.name!r} "
                             f"zeroth-order optimizer (method {None if zo is None else zo.get('method')!r})")
        super().load_state_dict(state_dict)
        self.seeds.load_state_dict(zo["seeds"])
        self.t = int(zo["t"])
        self.load_extra_state(zo)


def _subclasses(cls):
    for c in cls.__subclasses__():
        yield c
        yield from _subclasses(c)


def finite_or_inf(x) -> float:
    x = float(x)
    return x if math.isfinite(x) else math.inf
