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

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Adam hyper-parameters lr={lr} betas={betas} eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                denom = v.sqrt().add_(group["eps"])
                t = state["step"]
                step_size = group["lr"] * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
                p.addcdiv_(m, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss
