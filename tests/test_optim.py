"""src/optim.py: the multi-tensor OriginalAdamW gives the per-parameter loop's numbers bit for bit."""
import pytest
import torch

from src.optim import OriginalAdamW


def _run(foreach, weight_decay, chunk):
    g = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (5,), (1,), (300,), (3, 4, 2)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    opt = OriginalAdamW(params, lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=weight_decay, foreach=foreach)
    opt.CHUNK = chunk
    for step in range(6):
        for i, p in enumerate(params):
            # parameter 1 has no gradient on even steps: its step count falls behind the others'
            p.grad = None if (i == 1 and step % 2 == 0) else torch.randn(p.shape, generator=g) * 10 ** (i - 2)
        opt.step()
    return params, opt


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [1, 40, 1 << 24])   # one tensor per call, mixed chunks, one call
def test_foreach_equals_loop_bitwise(weight_decay, chunk):
    loop, opt_loop = _run(False, weight_decay, chunk)
    fast, opt_fast = _run(True, weight_decay, chunk)
    for a, b in zip(loop, fast):
        assert torch.equal(a, b)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_loop.state[a][key], opt_fast.state[b][key])
        assert opt_loop.state[a]["step"] == opt_fast.state[b]["step"]
    assert opt_fast.state[fast[1]]["step"] == 3 and opt_fast.state[fast[0]]["step"] == 6


def test_foreach_is_the_cpu_default():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = OriginalAdamW([p])
    assert opt.foreach is None and opt._use_foreach([p])



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
