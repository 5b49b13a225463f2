"""mezo.zo.step.mezo_step with the fast backend (mezo.zo.backend.FastNoise) against a literal, unfused
implementation of the step (docs/behaviour.md, "The MeZO step") and against the literal noise backend
(mezo.zo.step.PlainNoise)."""
import math

import pytest
import torch
from torch import nn

from mezo.zo import backend as zo
from mezo.zo.step import PlainNoise, ZOStep
from mezo.zo.step import mezo_step as zo_step
from mezo.zo.backend import FastNoise

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


FAST = FastNoise()


def draw_z(params, seed):
    return FAST.draw_z(params, seed)


def perturb_(params, seed, scale):
    FAST.add_(params, seed, scale)


def accumulate_grad_(params, seed, coeff):
    FAST.add_to_grad_(params, seed, coeff)


def mezo_step(params, loss_fn, *, seed, eps, lr, weight_decay=0.0, cache_z=False, noise=None):
    noise = noise or (FastNoise(cache_z=True) if cache_z else FAST)
    return zo_step(params, loss_fn, noise, seed, eps=eps, lr=lr, weight_decay=weight_decay)


def tiny_mlp(dtype=torch.float64, device="cpu", seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(device=device, dtype=dtype)
    x = torch.randn(11, 5, dtype=dtype, device=device)
    y = torch.randint(0, 3, (11,), device=device)

    def loss_fn():
        with torch.no_grad():
            return nn.functional.cross_entropy(model(x), y)
    return model, x, y, loss_fn


def reference_step(params, loss_fn, seed, eps, lr, wd):
    """The MeZO step literally: +eps z, loss, -2 eps z, loss, +eps z (restore), theta -= lr (g z + wd theta).
    (docs/behaviour.md, "The MeZO step")"""
    wd = [wd] * len(params) if isinstance(wd, float) else wd
    z = lambda: draw_z(params, seed)  # noqa: E731  (regenerated from the seed each time)
    for p, zi in zip(params, z()):
        p.data = p.data + eps * zi
    lp = float(loss_fn())
    for p, zi in zip(params, z()):
        p.data = p.data - 2 * eps * zi
    lm = float(loss_fn())
    g = (lp - lm) / (2 * eps)
    for p, zi in zip(params, z()):
        p.data = p.data + eps * zi
    for p, zi, w in zip(params, z(), wd):
        p.data = p.data - lr * (g * zi + w * p.data)
    return lp, lm, g


def big_params(dtype=torch.float32, device="cpu"):
    """A few chunks' worth, with ragged sizes, so the pool really splits the work."""
    g = torch.Generator().manual_seed(1)
    shapes = [(3 * zo.CPU_CHUNK + 101,), (7,), (513, 129), (zo.CPU_CHUNK - 3,)]
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in shapes]


@pytest.mark.parametrize("device", DEVICES)
def test_restore_after_plus_minus_plus(device):
    params = [p.double() for p in big_params(device=device)]
    orig = [p.clone() for p in params]
    perturb_(params, 123, 1e-3)
    assert all(not torch.equal(p, o) for p, o in zip(params, orig))
    perturb_(params, 123, -2e-3)
    perturb_(params, 123, 1e-3)
    for p, o in zip(params, orig):
        torch.testing.assert_close(p, o, rtol=0, atol=1e-15 * (1 + o.abs().max().item()))


def test_perturb_is_add_of_draw_z():
    params = big_params()
    z = draw_z(params, 9)
    expect = [p + (0.25 * zi) for p, zi in zip(params, z)]   # numpy order: round(s z), then add
    perturb_(params, 9, 0.25)
    for p, e in zip(params, expect):
        assert torch.equal(p, e)


@pytest.mark.parametrize("cache_z", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1, "per-param"])
def test_fused_step_matches_literal_reference(cache_z, wd):
    model, _, _, loss_fn = tiny_mlp()
    params = list(model.parameters())
    weight_decay = [0.1 if p.dim() > 1 else 0.0 for p in params] if wd == "per-param" else wd
    ref_model, _, _, ref_loss = tiny_mlp()
    ref_params = list(ref_model.parameters())
    start = [p.detach().clone() for p in params]
    eng = FastNoise(cache_z=cache_z)
    for step in range(6):
        seed = 1000 + step
        out = mezo_step(params, loss_fn, seed=seed, eps=1e-3, lr=0.05, weight_decay=weight_decay, noise=eng)
        lp, lm, g = reference_step(ref_params, ref_loss, seed, 1e-3, 0.05, weight_decay)
        assert isinstance(out, ZOStep) and not out.skipped
        assert out.loss_plus == pytest.approx(lp, rel=1e-12)
        assert out.loss_minus == pytest.approx(lm, rel=1e-12)
        assert out.grad == pytest.approx(g, rel=1e-8, abs=1e-10)
    moved = max((p - s).abs().max().item() for p, s in zip(params, start))
    assert moved > 1e-3   # the comparison below is not vacuous
    for p, r in zip(params, ref_params):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=0, atol=1e-12)


def test_fused_step_float32_matches_reference():
    model, _, _, loss_fn = tiny_mlp(torch.float32)
    ref_model, _, _, ref_loss = tiny_mlp(torch.float32)
    params, ref_params = list(model.parameters()), list(ref_model.parameters())
    for step in range(4):
        mezo_step(params, loss_fn, seed=step, eps=1e-2, lr=1e-2, weight_decay=0.01)
        reference_step(ref_params, ref_loss, step, 1e-2, 1e-2, 0.01)
    for p, r in zip(params, ref_params):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-4, atol=1e-5)


def test_projected_gradient_matches_autograd():
    model, x, y, loss_fn = tiny_mlp()
    params = list(model.parameters())
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params)
    z = draw_z(params, 77)
    directional = sum((zi * gi).sum() for zi, gi in zip(z, grads)).item()
    before = [p.detach().clone() for p in params]
    out = mezo_step(params, loss_fn, seed=77, eps=1e-5, lr=0.0)
    assert out.grad == pytest.approx(directional, rel=1e-6)
    for p, b in zip(params, before):   # lr = 0: the fused pass is a pure restore
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=1e-15)


def test_threads_and_workers_do_not_change_z_or_steps():
    base = big_params()
    threads = torch.get_num_threads()
    try:
        zs = []
        for nthreads, workers in [(1, 1), (2, 2), (1, 2), (2, 1), (2, 3)]:
            torch.set_num_threads(nthreads)
            zs.append(FastNoise(workers).draw_z(base, 5))
            zs.append(FastNoise().draw_z(base, 5))
        for other in zs[1:]:
            assert all(torch.equal(a, b) for a, b in zip(zs[0], other))
    finally:
        torch.set_num_threads(threads)

    def run(workers, cache_z):
        params = [p.clone() for p in base]
        eng = FastNoise(workers, cache_z=cache_z)
        loss = lambda: sum(float((p[:50] ** 2).sum()) for p in params)  # noqa: E731
        for s in range(3):
            mezo_step(params, loss, seed=s, eps=1e-3, lr=1e-4, weight_decay=0.1, noise=eng)
        return params

    ref = run(1, False)
    for workers, cache_z in [(2, False), (1, True), (2, True)]:
        assert all(torch.equal(a, b) for a, b in zip(ref, run(workers, cache_z)))


def test_same_seed_same_result_different_seed_differs():
    def run(seeds):
        model, _, _, loss_fn = tiny_mlp()
        params = list(model.parameters())
        for s in seeds:
            mezo_step(params, loss_fn, seed=s, eps=1e-3, lr=0.05)
        return params
    a, b, c = run([1, 2, 3]), run([1, 2, 3]), run([1, 2, 4])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    z1, z2 = draw_z(a, 1), draw_z(a, 2)
    assert all(not torch.equal(x, y) for x, y in zip(z1, z2))


def test_parameters_outside_the_list_never_change():
    model, _, _, loss_fn = tiny_mlp()
    frozen = list(model[0].parameters())
    before = [p.detach().clone() for p in frozen]
    trained = list(model[2].parameters())
    t0 = [p.detach().clone() for p in trained]
    for s in range(3):
        mezo_step(trained, loss_fn, seed=s, eps=1e-3, lr=0.1, weight_decay=0.5, cache_z=s % 2 == 1)
    assert all(torch.equal(p, b) for p, b in zip(frozen, before))
    assert all(not torch.equal(p, b) for p, b in zip(trained, t0))


def test_per_parameter_weight_decay():
    params = [torch.randn(40, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)]
    before = [p.clone() for p in params]
    out = mezo_step(params, lambda: 1.25, seed=3, eps=1e-3, lr=0.1, weight_decay=[0.0, 0.5])
    assert out.grad == 0.0 and not out.skipped
    torch.testing.assert_close(params[0], before[0], rtol=0, atol=1e-15)           # exempt
    torch.testing.assert_close(params[1], before[1] * (1 - 0.1 * 0.5), rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        FAST.decay_add_(params, 3, [0.0], 1.0)


@pytest.mark.parametrize("cache_z", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_skips_and_restores(cache_z, bad):
    params = big_params()
    start = [p.clone() for p in params]
    restored = [p.clone() for p in params]   # what an unfused +eps/-2eps/+eps restore gives
    perturb_(restored, 4, 1e-3)
    perturb_(restored, 4, -2e-3)
    perturb_(restored, 4, 1e-3)
    calls = iter([1.0, bad])
    out = mezo_step(params, lambda: torch.tensor(next(calls)), seed=4, eps=1e-3, lr=0.5,
                    weight_decay=0.1, cache_z=cache_z)
    assert out.skipped and not math.isfinite(out.grad)
    for p, r, s in zip(params, restored, start):
        assert torch.equal(p, r)                                   # bit-identical restore
        torch.testing.assert_close(p, s, rtol=0, atol=1e-6)        # = theta up to rounding


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_z_is_standard_normal(dtype):
    n = 1_000_003
    z = draw_z([torch.empty(n, dtype=dtype)], 2024)[0].double()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.std().item() - 1) < 5 * math.sqrt(0.5 / n)
    assert abs(((z ** 4).mean() - 3).item()) < 0.03                # kurtosis of N(0, 1)
    for k, p in [(1, 0.682689), (2, 0.954500), (3, 0.997300)]:
        frac = (z.abs() < k).double().mean().item()
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs((z > 0).double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / n)
    # no correlation between the cos and sin halves of a chunk, nor between neighbours
    h = zo.CPU_CHUNK // 2
    assert abs(torch.corrcoef(torch.stack([z[:h], z[h:2 * h]]))[0, 1].item()) < 5 / math.sqrt(h)
    assert abs(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1].item()) < 5 / math.sqrt(n)


def test_accumulate_grad_equals_coeff_times_z():
    params = [nn.Parameter(p) for p in big_params()]
    z = draw_z(params, 8)
    accumulate_grad_(params, 8, 0.5)
    for p, zi in zip(params, z):
        assert torch.equal(p.grad, 0.5 * zi)
    accumulate_grad_(params, 8, -0.25)
    for p, zi in zip(params, z):
        torch.testing.assert_close(p.grad, 0.25 * zi, rtol=1e-6, atol=1e-7)
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, big_params()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_params(dtype):
    ref = big_params()
    params = [p.to(dtype) for p in ref]
    z16, z32 = draw_z(params, 6), draw_z(ref, 6)
    for a, b in zip(z16, z32):
        assert a.dtype == dtype and torch.equal(a, b.to(dtype))    # z drawn in the parameter dtype
    start = [p.clone() for p in params]
    perturb_(params, 6, 0.5)
    for p, s, zi in zip(params, start, z16):
        assert torch.equal(p, (s.float() + 0.5 * zi.float()).to(dtype))
    a = [p.clone() for p in start]
    b = [p.clone() for p in start]
    mezo_step(a, lambda: float(a[0][:10].float().square().sum()), seed=1, eps=1e-2, lr=1e-3, noise=FastNoise(1))
    mezo_step(b, lambda: float(b[0][:10].float().square().sum()), seed=1, eps=1e-2, lr=1e-3,
              noise=FastNoise(2, cache_z=True))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, start))


def test_cache_buffers_are_reused_and_releasable():
    model, _, _, loss_fn = tiny_mlp()
    params = list(model.parameters())
    eng = FastNoise(cache_z=True)
    mezo_step(params, loss_fn, seed=1, eps=1e-3, lr=0.01, noise=eng)
    bufs = [b.data_ptr() for b in eng._cache.flat]
    mezo_step(params, loss_fn, seed=2, eps=1e-3, lr=0.01, noise=eng)
    assert [b.data_ptr() for b in eng._cache.flat] == bufs
    eng.release_cache()
    assert eng._cache is None


def test_non_contiguous_parameter_is_rejected():
    with pytest.raises(ValueError, match="contiguous"):
        perturb_([torch.randn(4, 6).t()], 1, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_matches_reference_and_cache():
    model, _, _, loss_fn = tiny_mlp(torch.float32, "cuda")
    ref_model, _, _, ref_loss = tiny_mlp(torch.float32, "cuda")
    params, ref_params = list(model.parameters()), list(ref_model.parameters())
    cached_model, _, _, cached_loss = tiny_mlp(torch.float32, "cuda")
    cached = list(cached_model.parameters())
    for s in range(4):
        mezo_step(params, loss_fn, seed=s, eps=1e-2, lr=1e-2, weight_decay=0.01)
        mezo_step(cached, cached_loss, seed=s, eps=1e-2, lr=1e-2, weight_decay=0.01, cache_z=True)
        reference_step(ref_params, ref_loss, s, 1e-2, 1e-2, 0.01)
    for p, r, c in zip(params, ref_params, cached):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-4, atol=1e-5)
        assert torch.equal(p, c)


def test_loss_fn_exception_restores_parameters():
    params = big_params()
    start = [p.clone() for p in params]

    def boom():
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        mezo_step(params, boom, seed=1, eps=1e-3, lr=0.1)
    calls = iter([1.0])
    with pytest.raises(StopIteration):
        mezo_step(params, lambda: next(calls), seed=2, eps=1e-3, lr=0.1, cache_z=True)
    for p, s in zip(params, start):
        torch.testing.assert_close(p, s, rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_chunks_decay_cache_and_grads(dtype):
    g = torch.Generator().manual_seed(3)
    # a parameter straddling two CUDA chunks, small ones on both sides
    shapes = [(1000,), (zo.CUDA_CHUNK + 12345,), (77, 3), (4096,)]
    base = [torch.randn(s, generator=g).to("cuda", dtype) for s in shapes]
    z1, z2 = draw_z(base, 11), draw_z(base, 11)
    assert all(torch.equal(a, b) for a, b in zip(z1, z2))
    zall = torch.cat([z.float().flatten() for z in z1])
    assert abs(zall.mean().item()) < 0.01 and abs(zall.std().item() - 1) < 0.01

    def run(cache_z, bad=False):
        params = [nn.Parameter(p.clone()) for p in base]
        eng = FastNoise(cache_z=cache_z)
        for s in range(3):
            calls = iter([1.0, float("nan")]) if bad else None
            loss = (lambda: next(calls)) if bad else \
                (lambda: sum(float(p.float()[:20].square().sum()) for p in params))
            out = mezo_step(params, loss, seed=s, eps=1e-2, lr=1e-3, noise=eng,
                            weight_decay=[0.0, 0.1, 0.2, 0.0])
            assert out.skipped == bad
        return params
    a, b = run(False), run(True)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(not torch.equal(x, y) for x, y in zip(a, base))
    for p, q in zip(run(False, bad=True), base):   # 3 restores, 3 roundings each
        tol = dict(rtol=0.05, atol=0.02) if dtype == torch.bfloat16 else dict(rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(p.detach(), q, **tol)
    params = [nn.Parameter(p.clone()) for p in base]
    accumulate_grad_(params, 11, 0.5)
    for p, z in zip(params, z1):
        torch.testing.assert_close(p.grad, 0.5 * z)


@pytest.mark.parametrize("kind", ["update", "into_grad", "scaled"])
def test_fast_backend_equals_plain_backend(kind):
    """The same step through FastNoise and through the literal PlainNoise gives the same numbers."""
    out = {}
    for name, noise in (("fast", FastNoise(2)), ("plain", PlainNoise(FAST.draw_z)), ("cached", FastNoise(cache_z=True))):
        model, _, _, loss_fn = tiny_mlp()
        params = list(model.parameters())
        kw = dict(eps=1e-3, lr=0.05, weight_decay=[0.1, 0.0, 0.2, 0.0])
        if kind == "into_grad":
            kw = dict(eps=1e-3, into_grad=0.5)
        elif kind == "scaled":
            kw.update(pert=[1.0, 0.5, 2.0, 1.0], upd=[3.0, 1.0, 0.25, 1.0])
        steps = [zo_step(params, loss_fn, noise, s, **kw) for s in range(3)]
        out[name] = (steps, [p.detach().clone() for p in params],
                     [p.grad.clone() for p in params] if kind == "into_grad" else None)
    for name in ("plain", "cached"):
        assert out[name][0] == out["fast"][0]
        assert all(torch.equal(a, b) for a, b in zip(out[name][1], out["fast"][1]))
        if kind == "into_grad":
            assert all(torch.equal(a, b) for a, b in zip(out[name][2], out["fast"][2]))
