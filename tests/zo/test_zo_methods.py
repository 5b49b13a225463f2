"""The zeroth-order family (mezo.zo.methods, mezo.zo.noise) against literal re-statements.

Each method runs several steps in place on a tiny float64 MLP; the test re-states the paper's /
code's update rule on an explicit parameter list (losses evaluated functionally at theta +- eps z,
no in-place restores), drawing the same directions through the noise's own draw functions, and
the two parameter trajectories must agree to float rounding. ZO-SGD-MMT and ZO-Adam are checked
against torch.optim.SGD / Adam fed g z as the gradient (what the ZO-Bench code does).
"""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import tiny

from mezo.zo import methods as zm
from mezo.zo.losses import VmapLosses, accumulated_loss
from mezo.zo.backend import FastNoise
from mezo.zo.noise import GaussianParamNoise, LowRankNoise, RademacherNoise, sub_seed

pytestmark = pytest.mark.usefixtures("one_thread")

EPS, STEPS, SEED = 1e-3, 6, 7
X = torch.randn(11, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
Y = torch.randint(0, 3, (11,), generator=torch.Generator().manual_seed(2))


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def setup():
    """(model, its params, in-place loss_fn, functional L(theta), initial theta copy)."""
    model = make_model()
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]

    def loss_fn():
        return nn.functional.cross_entropy(model(X), Y)

    def L(theta, x=X, y=Y):
        with torch.no_grad():
            return float(nn.functional.cross_entropy(functional_call(model, dict(zip(names, theta)), (x,)), y))
    return model, params, loss_fn, L, [p.detach().clone() for p in params]


def seeds(n=STEPS):
    rs = np.random.RandomState(SEED)
    return [int(rs.randint(1_000_000_000)) for _ in range(n)]


def run(method, loss_fn, lrs):
    return [tiny.zo_step(method, loss_fn, s, lr) for s, lr in zip(seeds(len(lrs)), lrs)]


def close(params, theta, tol=1e-10):
    for p, t in zip(params, theta):
        torch.testing.assert_close(p.detach(), t, rtol=tol, atol=tol)


def spsa(L, theta, z, eps=EPS):
    lp = L([t + eps * zi for t, zi in zip(theta, z)])
    lm = L([t - eps * zi for t, zi in zip(theta, z)])
    return (lp - lm) / (2 * eps)


def torch_optimizer_fed_g_z(L, theta, noise, make_optimizer):
    """The reference for ZO-Bench's momentum and Adam: a torch optimizer stepped with .grad = g z,
    g the SPSA projected gradient along z of each step's seed."""
    ref = [t.clone().requires_grad_(False) for t in theta]
    opt = make_optimizer(ref)
    for s in seeds():
        z = noise.draw_z(ref, s)
        g = spsa(L, ref, z)
        for r, zi in zip(ref, z):
            r.grad = g * zi
        opt.step()
    return ref


# ----------------------------------------------------------------------------- ZO-Bench family
def test_mezo_method_is_the_mezo_update():
    _, params, loss_fn, L, theta = setup()
    run(tiny.zo_build("mezo", params, eps=EPS, weight_decay=0.01), loss_fn, [0.05] * STEPS)
    fast = FastNoise()
    for s in seeds():
        z = fast.draw_z(theta, s)
        g = spsa(L, theta, z)
        theta = [t - 0.05 * (g * zi + 0.01 * t) for t, zi in zip(theta, z)]
    close(params, theta)


def test_sign_uses_the_sign_of_the_projected_gradient():
    _, params, loss_fn, L, theta = setup()
    steps = run(tiny.zo_build("sign", params, eps=EPS, weight_decay=0.01), loss_fn, [0.02] * STEPS)
    fast = FastNoise()
    for s, st in zip(seeds(), steps):
        z = fast.draw_z(theta, s)
        g = spsa(L, theta, z)
        assert st.grad == pytest.approx(g, rel=1e-9)
        theta = [t - 0.02 * (math.copysign(1.0, g) * zi + 0.01 * t) for t, zi in zip(theta, z)]
    close(params, theta)


def test_sign_elementwise_reading():
    _, params, loss_fn, L, theta = setup()
    run(tiny.zo_build("sign", params, eps=EPS, weight_decay=0.01, elementwise=True), loss_fn, [0.02] * STEPS)
    noise = GaussianParamNoise()
    for s in seeds():
        z = noise.draw_z(theta, s)
        g = spsa(L, theta, z)
        theta = [t - 0.02 * (torch.sign(g * zi) + 0.01 * t) for t, zi in zip(theta, z)]
    close(params, theta)


def test_conservative_keeps_the_best_of_three():
    _, params, loss_fn, L, theta = setup()
    lrs = [3.0, 0.05, 8.0, 0.05, 20.0, 3.0, 40.0, 0.1]   # large steps get rejected or reversed
    method = tiny.zo_build("conservative", params, eps=EPS)
    fast, choices, got = FastNoise(), [], []
    for s, lr in zip(seeds(len(lrs)), lrs):
        tiny.zo_step(method, loss_fn, s, lr)
        got.append(method.last_choice)
        z = fast.draw_z(theta, s)
        g = spsa(L, theta, z)
        minus = [t - lr * g * zi for t, zi in zip(theta, z)]
        plus = [t + lr * g * zi for t, zi in zip(theta, z)]
        l0, l1, l2 = L(theta), L(minus), L(plus)
        if l1 > l0:
            choice = "theta" if l0 < l2 else "plus"
        else:
            choice = "minus" if l1 < l2 else "plus"
        theta = {"theta": theta, "minus": minus, "plus": plus}[choice]
        choices.append(choice)
    assert got == choices
    assert len(set(choices)) >= 2, choices       # the test exercises more than one branch
    close(params, theta)
    assert zm.ZOSGDConservative.forwards_per_step == 5
    with pytest.raises(ValueError, match="weight decay"):
        tiny.zo_build("conservative", params, eps=EPS, weight_decay=0.1)


def test_momentum_equals_torch_sgd_fed_g_z():
    _, params, loss_fn, L, theta = setup()
    method = tiny.zo_build("momentum", params, eps=EPS, weight_decay=0.01, momentum=0.9)
    run(method, loss_fn, [0.05] * STEPS)
    ref = torch_optimizer_fed_g_z(L, theta, FastNoise(),
                                  lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01))
    close(params, ref)
    # memory: one buffer per parameter, nothing else
    assert method.state_numel() == sum(p.numel() for p in params)
    assert all(set(method.state[p]) == {"momentum_buffer"} for p in params)   # torch.optim.SGD's name


def test_adam_equals_torch_adam_fed_g_z():
    _, params, loss_fn, L, theta = setup()
    method = tiny.zo_build("adam", params, eps=EPS)
    run(method, loss_fn, [1e-2] * STEPS)
    ref = torch_optimizer_fed_g_z(L, theta, GaussianParamNoise(), lambda ps: torch.optim.Adam(ps, lr=1e-2))
    close(params, ref)
    assert method.state_numel() == 2 * sum(p.numel() for p in params)
    assert all(int(method.state[p]["step"]) == STEPS for p in params)


# ----------------------------------------------------------------------------- HiZOO
@pytest.mark.parametrize("form", ["paper", "code2024"])
def test_hizoo_matches_its_three_forward_rule(form):
    _, params, loss_fn, L, theta = setup()
    alpha, lr, wd = 0.3, 0.05, 0.01      # a large alpha, so the diagonal moves visibly in 6 steps
    method = tiny.zo_build("hizoo", params, eps=EPS, weight_decay=wd, alpha=alpha, form=form)
    calls = []
    counted = lambda: calls.append(1) or loss_fn()  # noqa: E731
    run(method, counted, [lr] * STEPS)
    assert len(calls) == 3 * STEPS == method.forwards_per_step * STEPS
    diag = [torch.ones_like(t) for t in theta]
    noise = GaussianParamNoise()
    for s in seeds():
        z = noise.draw_z(theta, s)
        if form == "paper":          # state H = Sigma^{-1}: Algorithm 1 of the paper
            half = [1 / h.sqrt() for h in diag]
        else:                        # state S = Sigma: medium_models/src/trainer.py (2024)
            half = [si.sqrt() for si in diag]
        l0 = L(theta)
        lp = L([t + EPS * hf * zi for t, hf, zi in zip(theta, half, z)])
        lm = L([t - EPS * hf * zi for t, hf, zi in zip(theta, half, z)])
        c = abs(lp + lm - 2 * l0) / (2 * EPS * EPS)
        if form == "paper":
            diag = [(1 - alpha) * h + alpha * c * h * zi * zi for h, zi in zip(diag, z)]
            half = [1 / h.sqrt() for h in diag]
        else:
            diag = [(1 - alpha) * si + alpha * c * (1 / si) * zi * zi for si, zi in zip(diag, z)]
            half = [si.sqrt() for si in diag]
        g = (lp - lm) / (2 * EPS)
        theta = [t - lr * (g * zi * hf + wd * t) for t, zi, hf in zip(theta, z, half)]
    close(params, theta)
    # c = |l+ + l- - 2 l0| / (2 eps^2) divides loss rounding (1e-16) by eps^2 (1e-6)
    close([method.state[p][method.diag_key] for p in params], diag, tol=1e-8)
    assert not all(torch.allclose(d, torch.ones_like(d)) for d in diag)
    assert method.state_numel() == sum(p.numel() for p in params)


# ----------------------------------------------------------------------------- LOZO
def _lozo_literal(L, theta, lr, rank, nu, beta1=None, n_steps=STEPS, wd=0.0):
    """LOZO / LOZO-M as optsuite/LOZO's LOZOtrainer codes them, on an explicit parameter list."""
    draw = LowRankNoise(rank)
    gauss = GaussianParamNoise()
    v_seed = v_old_seed = None
    mom = [None] * len(theta)
    for t, s in enumerate(seeds(n_steps)):
        if t % nu == 0:
            v_seed = s
        U = [draw.u_of(p, i, s) if p.dim() >= 2 else None for i, p in enumerate(theta)]
        V = [draw.v_of(p, i, v_seed) if p.dim() >= 2 else None for i, p in enumerate(theta)]
        z = [u @ v.t() if u is not None else gauss.z(p, i, s) for i, (p, u, v) in enumerate(zip(theta, U, V))]
        g = spsa(L, theta, z)
        new = []
        for i, (p, u, v, zi) in enumerate(zip(theta, U, V, z)):
            if beta1 is None:
                step = g * zi
            elif u is not None:
                if t % nu == 0:
                    if v_old_seed is not None:
                        vo = draw.v_of(p, i, v_old_seed)
                        mom[i] = beta1 * mom[i] @ vo.t() @ v / vo.shape[0] + (1 - beta1) * g * u
                    else:
                        mom[i] = g * u
                else:
                    mom[i] = beta1 * mom[i] + (1 - beta1) * g * u
                step = mom[i] @ v.t()
            else:
                mom[i] = g * zi if t == 0 else beta1 * mom[i] + (1 - beta1) * g * zi
                step = mom[i]
            new.append(p - lr * (step + wd * p))
        if beta1 is not None and t % nu == nu - 1 and t % nu != 0:
            v_old_seed = v_seed
        theta = new
    return theta, mom


def test_lozo_low_rank_directions_and_update():
    _, params, loss_fn, L, theta = setup()
    method = tiny.zo_build("lozo", params, eps=EPS, weight_decay=0.01, rank=2, nu=3)
    run(method, loss_fn, [0.05] * 7)
    ref, _ = _lozo_literal(L, theta, 0.05, rank=2, nu=3, n_steps=7, wd=0.01)
    close(params, ref)
    # the direction of a matrix has rank r; V is the same within an interval of nu steps
    nz, W = method.noise, params[0]
    s1, s2 = seeds(2)
    z1, z2 = nz.z(W, 0, s1), nz.z(W, 0, s2)
    assert torch.linalg.matrix_rank(z1) == 2
    assert torch.linalg.matrix_rank(torch.cat([z1, z2])) == 2    # shared row space (V)
    assert method.state_numel() == sum(p.shape[1] * 2 for p in params if p.dim() == 2)


def test_lozo_m_momentum_in_the_u_space():
    _, params, loss_fn, L, theta = setup()
    method = tiny.zo_build("lozo_m", params, eps=EPS, rank=2, nu=3, beta1=0.9)
    run(method, loss_fn, [0.05] * 8)                 # crosses two V resamplings (t = 3, 6)
    ref, mom = _lozo_literal(L, theta, 0.05, rank=2, nu=3, beta1=0.9, n_steps=8)
    close(params, ref)
    close([method.state[p]["momentum_buffer"] for p in params], mom)
    mats = [p for p in params if p.dim() == 2]
    assert [tuple(m.shape) for m, p in zip([method.state[p]["momentum_buffer"] for p in params], params) if p.dim() == 2] == [(p.shape[0], 2) for p in mats]
    assert method.state_numel() == (sum(p.shape[0] * 2 + p.shape[1] * 2 for p in mats)
                                    + sum(p.numel() for p in params if p.dim() == 1))


# ----------------------------------------------------------------------------- FZOO
def _fzoo_literal(L, theta, lr, n, wd=0.0):
    noise = RademacherNoise()
    for s in seeds():
        us = [noise.draw_z(theta, sub_seed(s, k, b"fzoo-dir")) for k in range(n)]
        l0 = L(theta)
        ls = [L([t + EPS * ui for t, ui in zip(theta, u)]) for u in us]
        sigma = float(np.std(ls, ddof=1))
        g = [sum((li - l0) * u[j] for li, u in zip(ls, us)) / (EPS * n) for j in range(len(theta))]
        theta = [t - lr * (gj / sigma + wd * t) for t, gj in zip(theta, g)]
    return theta


def test_fzoo_sequential_and_batched():
    model, params, loss_fn, L, theta = setup()
    method = tiny.zo_build("fzoo", params, eps=EPS, weight_decay=0.01, n=4)
    assert method.forwards_per_step == 5
    run(method, loss_fn, [1e-3] * STEPS)
    ref = _fzoo_literal(L, theta, 1e-3, 4, wd=0.01)
    close(params, ref)
    u = method.noise.z(params[0], 0, 123)
    assert set(u.unique().tolist()) == {-1.0, 1.0}
    assert method.state_numel() == 0
    # the batched evaluation (one vmapped forward for the N perturbed losses) gives the same numbers
    model2, params2, loss_fn2, _, _ = setup()
    names = [n for n, _ in model2.named_parameters()]
    batched = VmapLosses(names, lambda d: nn.functional.cross_entropy(functional_call(model2, d, (X,)), Y))
    run(tiny.zo_build("fzoo", params2, eps=EPS, weight_decay=0.01, n=4, batched_losses=batched),
        loss_fn2, [1e-3] * STEPS)
    close(params2, ref)


# ----------------------------------------------------------------------------- accumulation
def test_gradient_accumulation_equals_the_full_batch():
    _, full, loss_full, _, _ = setup()
    model, micro, _, _, _ = setup()
    run(tiny.zo_build("mezo", full, eps=EPS, weight_decay=0.01), loss_full, [0.1] * STEPS)
    parts, forwards = [], []
    for lo, hi in [(0, 4), (4, 8), (8, 11)]:                 # unequal micro-batches: 4, 4, 3
        def fn(lo=lo, hi=hi):
            forwards.append(hi - lo)
            return nn.functional.cross_entropy(model(X[lo:hi]), Y[lo:hi])
        parts.append((fn, hi - lo))
    run(tiny.zo_build("mezo", micro, eps=EPS, weight_decay=0.01), accumulated_loss(parts), [0.1] * STEPS)
    close(micro, full, tol=1e-12)
    assert max(forwards) == 4 and len(forwards) == 3 * 2 * STEPS   # one micro-batch at a time


# ----------------------------------------------------------------------------- state, noises, errors
@pytest.mark.parametrize("name,hp", [("momentum", {}), ("adam", {}), ("hizoo", {"alpha": 0.2}), ("hizoo", {"alpha": 0.2, "form": "code2024"}),
                                     ("lozo", {"rank": 2, "nu": 3}), ("lozo_m", {"rank": 2, "nu": 3})])
def test_state_dict_resumes_exactly(name, hp):
    _, params, loss_fn, _, _ = setup()
    a = tiny.zo_build(name, params, eps=EPS, **hp)
    ss = seeds(7)
    for s in ss[:4]:
        tiny.zo_step(a, loss_fn, s, 0.01)
    state, saved = copy.deepcopy(a.state_dict()), [p.detach().clone() for p in params]   # torch: references
    for s in ss[4:]:
        tiny.zo_step(a, loss_fn, s, 0.01)
    _, params_b, loss_b, _, _ = setup()
    with torch.no_grad():
        for p, v in zip(params_b, saved):
            p.copy_(v)
    b = tiny.zo_build(name, params_b, eps=EPS, **hp)
    b.load_state_dict(state)
    for s in ss[4:]:
        tiny.zo_step(b, loss_b, s, 0.01)
    close(params_b, [p.detach() for p in params], tol=0)


def test_param_noise_passes_apply_draw_z():
    torch.manual_seed(3)
    params = [torch.randn(6, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    for noise in (GaussianParamNoise(), RademacherNoise(), LowRankNoise(2)):
        if isinstance(noise, LowRankNoise):
            noise.set_v_seed(99)
        z = noise.draw_z(params, 11)
        ps = [p.clone() for p in params]
        noise.decay_add_(ps, 11, [0.1, -0.2], [0.5, 2.0])
        close(ps, [p + d * p + s * zi for p, d, s, zi in zip(params, [0.1, -0.2], [0.5, 2.0], z)], tol=1e-14)
        noise.add_to_grad_(ps, 11, 3.0)
        close([p.grad for p in ps], [3.0 * zi for zi in z], tol=1e-14)
        assert not torch.equal(noise.draw_z(params, 12)[0], z[0])


def test_bad_hyperparameters_are_refused():
    _, params, _, _, _ = setup()
    with pytest.raises(ValueError, match="unknown zo method"):
        tiny.zo_build("nope", params, eps=EPS)
    with pytest.raises(ValueError, match="N >= 2"):
        tiny.zo_build("fzoo", params, eps=EPS, n=1)
    with pytest.raises(ValueError, match="Rademacher"):
        tiny.zo_build("fzoo", params, eps=EPS, noise=FastNoise())
    with pytest.raises(ValueError, match="per-parameter"):
        tiny.zo_build("adam", params, eps=EPS, noise=FastNoise())
    with pytest.raises(ValueError, match="nu"):
        tiny.zo_build("lozo", params, eps=EPS, nu=0)
    with pytest.raises(ValueError, match="lozo_m"):
        tiny.zo_build("lozo", params, eps=EPS, beta1=0.9)


# ----------------------------------------------------------------------------- tiny RoBERTa
def _mlm_batch(lo, hi):
    items = tiny.mask_dataset(12)[lo:hi]
    width = max(len(it["input_ids"]) for it in items)
    ids = torch.tensor([it["input_ids"] + [1] * (width - len(it["input_ids"])) for it in items])
    mask = torch.tensor([it["attention_mask"] + [0] * (width - len(it["attention_mask"])) for it in items])
    return ids, mask, torch.tensor([it["label"] for it in items])


def _mlm_loss(mlm, lo, hi):
    ids, mask, labels = _mlm_batch(lo, hi)

    def loss_fn():
        logits = mlm(input_ids=ids, attention_mask=mask).logits[:, 2][:, [10, 20]]
        return nn.functional.cross_entropy(logits, labels)
    return loss_fn


def _tiny_mlm(tiny_roberta_dir):
    from transformers import AutoModelForMaskedLM
    mlm = AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir, hidden_dropout_prob=0.0,
                                               attention_probs_dropout_prob=0.0).double().eval()
    return mlm, [p for p in mlm.parameters() if p.requires_grad]


@pytest.mark.parametrize("name,hp", [("lozo_m", {"rank": 2, "nu": 2}), ("hizoo", {}), ("fzoo", {"n": 3}),
                                     ("adam", {})])
def test_methods_run_on_tiny_roberta(tiny_roberta_dir, name, hp):
    """The real parameter zoo: a tied embedding/decoder matrix (2-D: low-rank for LOZO), LayerNorm vectors."""
    mlm, params = _tiny_mlm(tiny_roberta_dir)
    before = [p.detach().clone() for p in params]
    loss_fn = _mlm_loss(mlm, 0, 12)
    method = tiny.zo_build(name, params, eps=EPS, **hp)
    steps = run(method, loss_fn, [1e-4] * 3)
    assert all(not s.skipped and math.isfinite(s.loss_plus) for s in steps)
    assert all(not torch.equal(p, b) for p, b in zip(params, before))
    assert mlm.lm_head.decoder.weight is mlm.roberta.embeddings.word_embeddings.weight   # still tied


def test_gradient_accumulation_on_tiny_roberta(tiny_roberta_dir):
    """Micro-batches of 5 and 7 (padded to their own widths) give the full batch-12 MeZO update."""
    mlm_a, full = _tiny_mlm(tiny_roberta_dir)
    mlm_b, micro = _tiny_mlm(tiny_roberta_dir)
    run(tiny.zo_build("mezo", full, eps=EPS), _mlm_loss(mlm_a, 0, 12), [1e-3] * 2)
    parts = [(_mlm_loss(mlm_b, 0, 5), 5), (_mlm_loss(mlm_b, 5, 12), 7)]
    run(tiny.zo_build("mezo", micro, eps=EPS), accumulated_loss(parts), [1e-3] * 2)
    close(micro, [p.detach() for p in full], tol=1e-12)


def test_fzoo_batched_forward_on_tiny_roberta(tiny_roberta_dir):
    """The N perturbed losses in one vmapped RoBERTa forward equal the sequential ones."""
    mlm, _ = _tiny_mlm(tiny_roberta_dir)
    named = [(n, p) for n, p in mlm.named_parameters() if "layer.1." in n]     # e.g. one layer
    names, params = [n for n, _ in named], [p for _, p in named]
    ids, mask, labels = _mlm_batch(0, 12)

    def loss_of(d):
        out = functional_call(mlm, d, (), {"input_ids": ids, "attention_mask": mask})
        return nn.functional.cross_entropy(out.logits[:, 2][:, [10, 20]], labels)
    method = tiny.zo_build("fzoo", params, eps=EPS, n=4)
    seeds_ = method.direction_seeds(5)
    with torch.no_grad():
        sequential = method._perturbed_losses(lambda: loss_of({}), seeds_)
    batched = VmapLosses(names, loss_of)(method.noise, params, seeds_, EPS)
    assert batched == pytest.approx(sequential, rel=1e-12, abs=0)
    assert len(set(batched)) == 4
