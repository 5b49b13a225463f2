"""Direction kinds for the zeroth-order methods of mezo.zo.methods, as ``zo.Noise`` implementations.

MeZO's z is one Gaussian stream over the whole parameter list (mezo.zo.backend.FastNoise). The methods
that followed it need more from a direction than "add s z": ZO-Adam and HiZOO need z elementwise
(z^2, sqrt(Sigma) z), LOZO needs the factors U, V of z = U V^T, FZOO needs Rademacher signs. So the
noises here draw z **one parameter at a time**, parameter i from its own key (seed, i): a pass
never holds more than one parameter's z (the largest matrix, e.g. the 50265 x 1024 embedding of
RoBERTa-large), and ``z(p, i, seed)`` gives any method elementwise access to the same numbers the
three ``zo.Noise`` passes apply. Nothing is stored between passes except what a method defines
(LOZO's V: one n x r matrix per weight matrix); every z is regenerated from its seed.

* ``GaussianParamNoise`` - z_i ~ N(0, I), drawn by ``FastNoise`` for the single parameter.
* ``RademacherNoise`` - z_i uniform on {-1, +1} (FZOO).
* ``ScaledNoise`` - z_i * s_i with an elementwise multiplier s_i (HiZOO: s = Sigma^{1/2}).
* ``LowRankNoise`` - z_i = U_i V_i^T for parameters with ndim >= 2 (viewed as shape[0] x rest),
  U fresh each seed, V from a separate seed the method sets (kept for nu steps); Gaussian z for
  vectors (LOZO).
"""
import hashlib
import struct
from typing import Callable, Dict, List, Optional, Tuple

import torch

from mezo.zo.step import per_param
from mezo.zo.backend import FastNoise

_M63 = (1 << 63) - 1


def sub_seed(seed: int, index: int, tag: bytes = b"param") -> int:
    """A 63-bit seed for parameter ``index`` under the step seed (independent streams per parameter)."""
    h = hashlib.blake2b(struct.pack("<QQ", int(seed) & ((1 << 64) - 1), int(index)), digest_size=8,
                        person=b"zo-noise", salt=tag[:16].ljust(16, b"\0"))
    return int.from_bytes(h.digest(), "little") & _M63


def _generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


class ParamNoise:
    """A ``zo.Noise`` whose z is drawn parameter by parameter: subclasses define ``z(p, i, seed)``."""

    def z(self, p: torch.Tensor, i: int, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def draw_z(self, params, seed: int) -> List[torch.Tensor]:
        """The z of ``seed`` for every parameter (new tensors): the definition the passes apply."""
        return [self.z(p, i, seed) for i, p in enumerate(params)]

    def add_scaled_z_(self, p: torch.Tensor, i: int, seed: int, s: float) -> None:
        """p += s z (a subclass may do it without materialising z)."""
        p.add_(self.z(p, i, seed), alpha=s)

    @torch.no_grad()
    def add_(self, params, seed: int, scales) -> None:
        params = list(params)
        for i, (p, s) in enumerate(zip(params, per_param(scales, len(params)))):
            if s != 0.0:
                self.add_scaled_z_(p, i, seed, s)

    @torch.no_grad()
    def decay_add_(self, params, seed: int, decays, scales) -> None:
        params = list(params)
        n = len(params)
        for i, (p, d, s) in enumerate(zip(params, per_param(decays, n), per_param(scales, n))):
            if d != 0.0:
                p.add_(p, alpha=d)
            if s != 0.0:
                self.add_scaled_z_(p, i, seed, s)

    @torch.no_grad()
    def add_to_grad_(self, params, seed: int, scales) -> None:
        params = list(params)
        for i, (p, s) in enumerate(zip(params, per_param(scales, len(params)))):
            z = self.z(p, i, seed)
            if p.grad is None:
                p.grad = s * z
            else:
                p.grad.add_(z, alpha=s)


class GaussianParamNoise(ParamNoise):
    """z_i ~ N(0, I) from key (seed, i), by the fast Box-Muller backend (one parameter at a time)."""

    def __init__(self):
        self._fast = FastNoise(workers=None)

    def z(self, p, i, seed):
        return self._fast.draw_z([p], sub_seed(seed, i))[0]


class RademacherNoise(ParamNoise):
    """z_i uniform on {-1, +1}^d from key (seed, i) (FZOO's directions)."""

    def z(self, p, i, seed):
        g = _generator(p.device, sub_seed(seed, i, b"rademacher"))
        bits = torch.randint(0, 2, p.shape, generator=g, device=p.device, dtype=torch.int8)
        return bits.to(p.dtype).mul_(2).sub_(1)


class ScaledNoise(ParamNoise):
    """z_i = base.z_i * scale(i) elementwise; HiZOO perturbs along Sigma^{1/2} z."""

    def __init__(self, base: ParamNoise, scale: Callable[[int], torch.Tensor]):
        self.base = base
        self.scale = scale

    def z(self, p, i, seed):
        return self.base.z(p, i, seed).mul_(self.scale(i))


class LowRankNoise(ParamNoise):
    """LOZO's directions: U_i V_i^T for matrices (ndim >= 2), Gaussian for vectors.

    U_i (m x r) is drawn from (seed, i) at each step; V_i (n x r) from (``v_seed``, i), where the
    method sets ``v_seed`` every nu steps (``set_v_seed``). V is cached (it is the state LOZO keeps:
    n r numbers per n-column matrix) and can always be regenerated from ``v_seed``.
    A parameter of ndim > 2 is viewed as shape[0] x (numel / shape[0]).
    """

    def __init__(self, rank: int):
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.v_seed: Optional[int] = None
        self._v: Dict[Tuple[int, int], torch.Tensor] = {}
        self._gauss = GaussianParamNoise()

    def set_v_seed(self, v_seed: int) -> None:
        """Resample every V (lazily: V_i is drawn at its first use under this seed)."""
        if v_seed != self.v_seed:
            self.v_seed = int(v_seed)
            self._v = {k: v for k, v in self._v.items() if k[0] == self.v_seed}

    @staticmethod
    def is_matrix(p: torch.Tensor) -> bool:
        return p.dim() >= 2

    def v_of(self, p, i, v_seed: Optional[int] = None) -> torch.Tensor:
        """V_i (n x r) of ``v_seed`` (default: the current one)."""
        v_seed = self.v_seed if v_seed is None else int(v_seed)
        if v_seed is None:
            raise RuntimeError("LowRankNoise: set_v_seed() before drawing low-rank directions")
        key = (v_seed, i)
        v = self._v.get(key) if v_seed == self.v_seed else None
        if v is None:
            n = p.numel() // p.shape[0]
            v = torch.randn(n, self.rank, generator=_generator(p.device, sub_seed(v_seed, i, b"lozo-v")),
                            device=p.device, dtype=p.dtype)
            if v_seed == self.v_seed:
                self._v[key] = v
        return v

    def u_of(self, p, i, seed) -> torch.Tensor:
        """U_i (m x r) of the step seed."""
        return torch.randn(p.shape[0], self.rank, generator=_generator(p.device, sub_seed(seed, i, b"lozo-u")),
                           device=p.device, dtype=p.dtype)

    def z(self, p, i, seed):
        if not self.is_matrix(p):
            return self._gauss.z(p, i, seed)
        return (self.u_of(p, i, seed) @ self.v_of(p, i).t()).reshape(p.shape)

    def add_scaled_z_(self, p, i, seed, s) -> None:
        """p += s U Vᵀ in one `addmm_`, never materialising the m x n direction (LOZO's memory)."""
        if self.is_matrix(p) and p.is_contiguous():
            p.view(p.shape[0], -1).addmm_(self.u_of(p, i, seed), self.v_of(p, i).t(), alpha=s)
        else:
            super().add_scaled_z_(p, i, seed, s)

    def state_numel(self) -> int:
        return sum(v.numel() for v in self._v.values())
