"""The original's Adam: `transformers.optimization.AdamW` of transformers 4.x (removed since).

It differs from `torch.optim.AdamW` in two places, so the FT rows need it to give the original's
numbers: eps is added to sqrt(v) *before* the bias correction, which is folded into the step size
(torch adds eps after dividing sqrt(v) by sqrt(1 - beta2^t), so early steps differ), and the
decoupled weight decay is applied *after* the Adam update, to the updated weights (torch decays
first). Written from that rule; the elementwise operations are those of the original, in its
order, so that results agree bit for bit.
"""
import math

import torch


class OriginalAdamW(torch.optim.Optimizer):
    """theta <- theta - lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps);  theta <- theta - lr wd theta."""

    CHUNK = 1 << 24   # elements per multi-tensor call (64 MiB of fp32 sqrt(v) at most, or one tensor)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, foreach=None):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Adam hyper-parameters lr={lr} betas={betas} eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        # The multi-tensor form is checked bit for bit against the loop on CPU (tests/test_optim.py),
        # where torch runs each foreach op as the same per-tensor kernel; elsewhere the loop is kept.
        self.foreach = foreach

    def _use_foreach(self, params) -> bool:
        if self.foreach is not None:
            return self.foreach
        return all(p.device.type == "cpu" and not p.is_sparse for p in params)

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
            if params and self._use_foreach(params):
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
        denom = v.sqrt().add_(group["eps"])
        p.addcdiv_(m, denom, value=-self._step_size(group, state["step"]))
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])

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
            denoms = torch._foreach_sqrt(vs)
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
