"""The original's Adam: `transformers.optimization.AdamW` of transformers 4.x (removed since).

It differs from `torch.optim.AdamW` in two places, so the FT rows need it to give the original's
numbers: eps is added to sqrt(v) *before* the bias correction, which is folded into the step size
(torch adds eps after dividing sqrt(v) by sqrt(1 - beta2^t), so early steps differ), and the
decoupled weight decay is applied *after* the Adam update, to the updated weights (torch decays
first). Written from that rule; the elementwise operations are those of the original, in its
order, so that results agree bit for bit.
"""
import itertools
import math

import torch


class OriginalAdamW(torch.optim.Optimizer):
    """theta <- theta - lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps);  theta <- theta - lr wd theta."""

    CHUNK = 1 << 24   # elements per multi-tensor call (64 MiB of fp32 sqrt(v) at most, or one tensor)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, foreach=False):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Adam hyper-parameters lr={lr} betas={betas} eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        # foreach=True: the multi-tensor form, checked bit for bit against the loop on CPU
        # (tests/training/test_optim.py). It saves kernel launches on a GPU, nothing on CPU (where torch runs
        # each foreach op tensor by tensor) while its sqrt(v) buffer spans a whole chunk: off by default.
        self.foreach = bool(foreach)
        self._scratch = {}   # (device, dtype) -> flat buffer that sqrt(v) is written into (see _denom)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
            if params and self.foreach:
                self._group_foreach(group, params)
            else:
                for p in params:
                    self._one(group, p)
        return loss

    def _step_size(self, group, t):
        beta1, beta2 = group["betas"]
        return group["lr"] * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)

    def _one(self, group, p):
        """The original's update of one parameter, operation by operation."""
        beta1, beta2 = group["betas"]
        state = self.state[p]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
        v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
        denom = self._denom(v, 0).add_(group["eps"])
        p.addcdiv_(m, denom, value=-self._step_size(group, state["step"]))
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])

    def _denom(self, v, offset):
        """sqrt(v) written into a reused buffer at `offset`: the same numbers as v.sqrt(), without
        allocating (and page-faulting in) a fresh tensor per parameter per step - for a 200 MB
        embedding that was most of the step's system time on CPU. The buffer grows to the largest
        parameter (loop) or chunk (foreach) and stays: resident memory for time."""
        if v.device.type != "cpu":   # a caching allocator: a fresh tensor costs nothing there
            return v.sqrt()
        buf = self._buffer(v, offset + v.numel())
        return torch.sqrt(v, out=buf[offset:offset + v.numel()].view(v.shape))

    def _buffer(self, like, size):
        key = (like.device, like.dtype)
        buf = self._scratch.get(key)
        if buf is None or buf.numel() < size:
            buf = self._scratch[key] = torch.empty(size, device=like.device, dtype=like.dtype)
        return buf

    def _group_foreach(self, group, params):
        """The same operations, each over many tensors at once: one call per chunk instead of one per
        tensor. Chunks of at most CHUNK elements bound the extra memory of the sqrt(v) buffers."""
        beta1, beta2 = group["betas"]
        for chunk in _chunks(params, self.CHUNK):
            grads = [p.grad for p in chunk]
            ms = [self.state[p]["exp_avg"] for p in chunk]
            vs = [self.state[p]["exp_avg_sq"] for p in chunk]
            torch._foreach_mul_(ms, beta1)
            torch._foreach_add_(ms, grads, alpha=1.0 - beta1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)
            sizes = [v.numel() for v in vs]
            self._buffer(vs[0], sum(sizes))   # grown once for the chunk, not tensor by tensor
            offsets = itertools.accumulate([0] + sizes[:-1])
            denoms = [self._denom(v, at) for v, at in zip(vs, offsets)]
            torch._foreach_add_(denoms, group["eps"])
            torch._foreach_addcdiv_(chunk, ms, denoms, [-self._step_size(group, self.state[p]["step"]) for p in chunk])
            del denoms
            if group["weight_decay"] > 0.0:
                torch._foreach_add_(chunk, chunk, alpha=-group["lr"] * group["weight_decay"])


def _chunks(params, limit):
    """Consecutive runs of params with at most `limit` elements in all (a larger tensor goes alone)."""
    chunk, size = [], 0
    for p in params:
        if chunk and size + p.numel() > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(p)
        size += p.numel()
    if chunk:
        yield chunk
