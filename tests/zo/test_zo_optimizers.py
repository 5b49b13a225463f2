"""Every zeroth-order method behaves as a torch optimizer: param groups, LR schedulers, state_dict
resumes bit-identically, and it works through accelerate's prepare and on a peft-wrapped model."""
import copy
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import tiny

from mezo.zo import OPTIMIZERS, SPSAGradient, ZeroOrderOptimizer, ZeroOrderSGD, MeZO

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(13, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
Y = torch.randint(0, 3, (13,), generator=torch.Generator().manual_seed(2))
# small hyper-parameters where the defaults need a bigger model (LOZO's rank, FZOO's N)
HP = {"lozo": {"rank": 2, "nu": 2}, "lozo_m": {"rank": 2, "nu": 2}, "fzoo": {"n": 3}, "hizoo": {"alpha": 0.1}}
WD = {"conservative": 0.0}   # ZO-SGD-Cons is defined without weight decay
METHODS = list(OPTIMIZERS)


def model_and_loss(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    return model, lambda: nn.functional.cross_entropy(model(X), Y)


def make(name, params, **kw):
    return OPTIMIZERS[name](params, **{"lr": 1e-2, "eps": 1e-3, "weight_decay": WD.get(name, 0.01), "seed": 5,
                                       **HP.get(name, {}), **kw})


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_the_family_is_registered_once_under_its_names():
    assert METHODS == ["mezo", "sign", "conservative", "momentum", "adam", "hizoo", "lozo", "lozo_m", "fzoo"]
    assert ZeroOrderSGD is MeZO
    assert all(OPTIMIZERS[n].name == n for n in METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_is_a_torch_optimizer_with_a_seeded_closure_step(name):
    model, loss_fn = model_and_loss()
    opt = make(name, model.parameters())
    assert isinstance(opt, torch.optim.Optimizer) and isinstance(opt, ZeroOrderOptimizer)
    before = flat(model)
    loss = opt.step(loss_fn)
    assert isinstance(loss, float) and math.isfinite(loss) and loss == opt.last.loss_plus
    assert not opt.last.skipped and not torch.equal(flat(model), before)
    assert opt.step() is None   # the Hugging Face loop's closure-less call after the update: a no-op
    with pytest.raises(RuntimeError, match="needs a closure"):
        opt.step()
    # the same seed gives the same update: the stream is np.random.RandomState(seed).randint(10**9)
    model2, loss2 = model_and_loss()
    import numpy as np
    make(name, model2.parameters(), seed=99).step(loss2, seed=int(np.random.RandomState(5).randint(1_000_000_000)))
    assert torch.equal(flat(model2), flat(model))


@pytest.mark.parametrize("name", METHODS)
def test_torch_lr_scheduler_sets_the_lr_of_each_step(name):
    """A torch scheduler drives the optimizer; each step equals one taken with that lr set by hand."""
    lrs = []
    model, loss_fn = model_and_loss()
    opt = make(name, model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + k))
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step(loss_fn)
        sched.step()
    assert lrs == pytest.approx([1e-2, 1e-2 / 2, 1e-2 / 3, 1e-2 / 4], rel=1e-15)
    by_hand, loss2 = model_and_loss()
    opt2 = make(name, by_hand.parameters())
    for lr in lrs:
        opt2.param_groups[0]["lr"] = lr
        opt2.step(loss2)
    assert torch.equal(flat(by_hand), flat(model))


@pytest.mark.parametrize("name", METHODS)
def test_two_param_groups_take_their_own_lr(name):
    """One step from the same point and seed: a group at lr b moves b/a times as far as at lr a."""
    a, b = 1e-3, 3e-3
    start = model_and_loss()[0].state_dict()
    one, loss1 = model_and_loss()
    opt1 = make(name, one.parameters(), lr=a)
    opt1.step(loss1)
    two, loss2 = model_and_loss()
    first, second = list(two[0].parameters()), list(two[2].parameters())
    opt2 = make(name, [{"params": first}, {"params": second, "lr": b}], lr=a)
    assert [g["lr"] for g in opt2.param_groups] == [a, b]
    opt2.step(loss2)
    if name == "conservative":
        assert opt1.last_choice == opt2.last_choice != "theta"
    assert opt1.last.grad == opt2.last.grad   # the same perturbation: lr does not enter g
    for (k, p1), p2 in zip(one.state_dict().items(), two.state_dict().values()):
        ratio = b / a if k.startswith("2.") else 1.0
        torch.testing.assert_close(p2 - start[k], ratio * (p1 - start[k]), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", METHODS)
def test_interrupted_run_resumed_from_state_dict_is_bit_identical(tmp_path, name):
    steps, cut = 6, 3
    ref, loss_ref = model_and_loss()
    opt = make(name, ref.parameters())
    for _ in range(steps):
        opt.step(loss_ref)

    model, loss_fn = model_and_loss()
    opt = make(name, model.parameters())
    for _ in range(cut):
        opt.step(loss_fn)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ck.pt")
    del model, opt
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)   # plain tensors and numbers only
    model, loss_fn = model_and_loss(seed=1)                      # other weights, other seed: all replaced
    model.load_state_dict(saved["model"])
    opt = make(name, model.parameters(), seed=1234)
    opt.load_state_dict(saved["opt"])
    for _ in range(steps - cut):
        opt.step(loss_fn)
    assert torch.equal(flat(model), flat(ref))
    assert opt.t == steps


def test_state_dict_holds_torch_names_and_refuses_another_method():
    model, loss_fn = model_and_loss()
    adam = make("adam", model.parameters())
    adam.step(loss_fn)
    sd = adam.state_dict()
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and int(sd["state"][0]["step"]) == 1
    assert sd["zo"]["method"] == "adam" and sd["zo"]["t"] == 1
    momentum = make("momentum", model.parameters())
    with pytest.raises(ValueError, match="not the state of a 'momentum'"):
        momentum.load_state_dict(sd)


def test_groups_must_agree_on_what_shapes_the_step():
    model, _ = model_and_loss()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    with pytest.raises(ValueError, match="eps must be the same in every param group"):
        MeZO([{"params": first}, {"params": second, "eps": 1e-2}], lr=1e-3)
    with pytest.raises(ValueError, match="n must be the same"):
        OPTIMIZERS["fzoo"]([{"params": first}, {"params": second, "n": 4}], lr=1e-3, n=3)
    with pytest.raises(ValueError, match="unknown hyper-parameter.*momentum is one of momentum"):
        MeZO(model.parameters(), lr=1e-3, momentum=0.9)
    with pytest.raises(ValueError, match="no parameters"):
        MeZO([p.requires_grad_(False) for p in model.parameters()], lr=1e-3)


@pytest.mark.parametrize("name", ["mezo", "hizoo", "fzoo"])
def test_through_accelerate_prepare(name):
    """accelerate wraps the optimizer (AcceleratedOptimizer) and round-trips its state_dict on prepare."""
    from accelerate import Accelerator
    model, loss_fn = model_and_loss()
    opt = make(name, model.parameters())
    acc = Accelerator(cpu=True)
    pmodel, popt = acc.prepare(model, opt)
    ref, loss_ref = model_and_loss()
    ropt = make(name, ref.parameters())
    for _ in range(3):
        popt.step(lambda: nn.functional.cross_entropy(pmodel(X), Y))
        ropt.step(loss_ref)
    assert torch.equal(flat(model), flat(ref))
    assert popt.optimizer.last == ropt.last


def test_on_a_peft_wrapped_model_only_the_adapters_move(splade_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(splade_dir, num_labels=2)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])).eval()
    ids = torch.tensor([[101, 2023, 2001, 2307, 102], [101, 2023, 2001, 6659, 102]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([1, 0])}
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    opt = MeZO(model.parameters(), lr=1e-2, eps=1e-3, seed=0)
    sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.5, total_iters=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        opt.step(lambda: model(**batch).loss)
        sched.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == trained and all("lora_" in n or "classifier" in n or "score" in n for n in trained)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-2)


def test_spsa_gradient_fills_grad_for_any_torch_optimizer():
    """n-SPSA into .grad: the average of n pairs' g z (z over all parameters, one seed each)."""
    import numpy as np
    from mezo.zo.backend import FastNoise
    model, loss_fn = model_and_loss()
    params = list(model.parameters())
    theta = [p.detach().clone() for p in params]
    est = SPSAGradient(params, eps=1e-3, samples=3, seed=11)
    loss = est.backward(loss_fn)
    for p, t in zip(params, theta):   # theta restored (to float rounding: +eps z - 2 eps z + eps z)
        torch.testing.assert_close(p.detach(), t, rtol=0, atol=1e-15)
    rs, noise, want = np.random.RandomState(11), FastNoise(), [torch.zeros_like(p) for p in params]
    for _ in range(3):
        s = int(rs.randint(1_000_000_000))
        z = noise.draw_z(theta, s)
        with torch.no_grad():
            for p, t, zi in zip(params, theta, z):
                p.copy_(t + 1e-3 * zi)
            lp = float(loss_fn())
            for p, t, zi in zip(params, theta, z):
                p.copy_(t - 1e-3 * zi)
            lm = float(loss_fn())
            for p, t in zip(params, theta):
                p.copy_(t)
        for w, zi in zip(want, z):
            w += (lp - lm) / 2e-3 * zi / 3
    for p, w in zip(params, want):
        torch.testing.assert_close(p.grad, w, rtol=1e-9, atol=1e-12)
    assert math.isfinite(loss)
    sgd = torch.optim.SGD(params, lr=0.1)
    sgd.step()
    for p, t, w in zip(params, theta, want):
        torch.testing.assert_close(p.detach(), t - 0.1 * w, rtol=1e-9, atol=1e-12)


def test_import_mezo_zo_needs_no_transformers():
    code = "import sys, mezo.zo, mezo; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
