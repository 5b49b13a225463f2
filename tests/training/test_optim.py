"""mezo.training.original_adamw: the multi-tensor OriginalAdamW gives the per-parameter loop's numbers bit for bit."""
import math

import pytest
import torch

from mezo.training.original_adamw import OriginalAdamW


class AllocatingAdamW(torch.optim.Optimizer):
    """The original's per-parameter operations, literally (sqrt(v) allocated afresh): the reference."""

    def __init__(self, params, lr, betas, eps, weight_decay):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                st["step"] += 1
                st["exp_avg"].mul_(b1).add_(p.grad, alpha=1.0 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
                denom = st["exp_avg_sq"].sqrt().add_(group["eps"])
                t = st["step"]
                p.addcdiv_(st["exp_avg"], denom, value=-group["lr"] * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t))
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])


def _run(make, weight_decay, chunk=None):
    g = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (5,), (1,), (300,), (3, 4, 2)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    opt = make(params, lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=weight_decay)
    if chunk is not None:
        opt.CHUNK = chunk
    for step in range(6):
        for i, p in enumerate(params):
            # parameter 1 has no gradient on even steps: its step count falls behind the others'
            p.grad = None if (i == 1 and step % 2 == 0) else torch.randn(p.shape, generator=g) * 10 ** (i - 2)
        opt.step()
    return params, opt


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("foreach,chunk", [(False, None), (True, 1), (True, 40), (True, 1 << 24)])
def test_equals_the_original_operations_bitwise(weight_decay, foreach, chunk):
    """Loop and multi-tensor forms (one tensor per call, mixed chunks, one call), sqrt(v) in a reused buffer."""
    ref, opt_ref = _run(AllocatingAdamW, weight_decay)
    fast, opt_fast = _run(lambda ps, **kw: OriginalAdamW(ps, foreach=foreach, **kw), weight_decay, chunk)
    for a, b in zip(ref, fast):
        assert torch.equal(a, b)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_ref.state[a][key], opt_fast.state[b][key])
        assert opt_ref.state[a]["step"] == opt_fast.state[b]["step"]
    assert opt_fast.state[fast[1]]["step"] == 3 and opt_fast.state[fast[0]]["step"] == 6
    assert not any(k in opt_fast.state_dict()["state"][0] for k in ("scratch", "_scratch"))


def test_loop_is_the_default():
    p = torch.nn.Parameter(torch.zeros(3))
    assert OriginalAdamW([p]).foreach is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_foreach_equals_loop_bitwise_on_cuda():
    """Where this passes, the multi-tensor form could become the GPU default (fewer kernel launches)."""
    results = []
    for foreach in (False, True):
        g = torch.Generator(device="cuda").manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, device="cuda", generator=g)) for s in [(64, 33), (33,), (1000,)]]
        opt = OriginalAdamW(params, lr=1e-2, weight_decay=0.1, foreach=foreach)
        for _ in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, device="cuda", generator=g)
            opt.step()
        results.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*results))
