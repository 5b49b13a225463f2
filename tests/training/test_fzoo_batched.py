"""--fzoo_batched (mezo.training.fzoo_batched): FZOO's N perturbed losses in one vmapped forward are the
sequential loop's losses, in the library and through the Trainer; where the rule or the model does
not allow it the run warns and loops, with the same numbers."""
import json
import logging

import pytest
import torch
from torch import nn

from mezo.cli import run
import tiny
from mezo.training import fzoo_batched
from mezo.zo import losses as zo_losses
from mezo.data.datasets import Collator
from mezo.models.lora import inject_lora
from mezo.models.prompt_mlm import PromptMLM
from mezo.models.prefix import inject_prefix

pytestmark = pytest.mark.usefixtures("one_thread")

EPS, N = 1e-3, 4


def _model(tiny_roberta_dir, trainable, tie_emb=False):
    """A float64 prompt model on the tiny RoBERTa (no dropout) with one of four trainable sets."""
    from transformers import AutoModelForMaskedLM
    mlm = AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir, hidden_dropout_prob=0.0,
                                               attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = PromptMLM(mlm, 2, [10, 20], tie_emb=tie_emb)
    if trainable == "lora":
        inject_lora(model, r=2, alpha=4)
    if trainable == "prefix":
        inject_prefix(model, 3)     # reparameterised: E and the per-layer MLPs
    model.double().eval()
    for name, p in model.named_parameters():
        p.requires_grad_({"full": True, "head": name.startswith("lm_head."), "lora": "lora_" in name,
                          "prefix": "prefix" in name}[trainable])
    return model


def _batch():
    return Collator(1)(tiny.mask_dataset())


@pytest.mark.parametrize("trainable,tie_emb", [("full", True), ("head", False), ("lora", False), ("prefix", False)])
def test_batched_losses_are_the_sequential_losses(tiny_roberta_dir, trainable, tie_emb):
    """Full parameters (with the decoder tied to the embeddings), the MLM head, LoRA adapters, prefixes."""
    model, batch = _model(tiny_roberta_dir, trainable, tie_emb), _batch()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    method = tiny.zo_build("fzoo", params, eps=EPS, n=N)
    seeds = method.direction_seeds(11)
    with torch.no_grad():
        sequential = method._perturbed_losses(lambda: model(**batch).loss, seeds)
    before = [p.detach().clone() for p in params]   # (the loop's in-place restore may round theta)
    counted = []
    batcher = fzoo_batched.Batcher(model, [n for n, _ in named], on_forwards=counted.append)
    loss_fn = batcher.wrap(lambda: model(**batch).loss, lambda m: m(**batch).loss, len(batch["input_ids"]))
    batched = loss_fn.perturbed_losses(method.noise, params, seeds, EPS)
    assert batched == pytest.approx(sequential, rel=1e-12, abs=0)
    assert len(set(batched)) == N and counted == [N] and batcher.worked
    assert all(torch.equal(p, b) for p, b in zip(params, before))   # functional: theta untouched
    # the losses really are at theta + eps u_k: the unperturbed loss is none of them
    assert float(model(**batch).loss) not in batched


def test_memory_rule():
    """Batched only while the N copies of the trainable bytes take at most half the free bytes."""
    assert fzoo_batched.reason_not_batched(4, 25, 200) is None
    assert fzoo_batched.reason_not_batched(4, 26, 200) is not None
    assert fzoo_batched.reason_not_batched(8, 1, 15) is not None


def _trainer(tmp_path, model, **kw):
    return tiny.trainer(tmp_path, model, **{**dict(per_device_train_batch_size=12, learning_rate=1e-6, zo_method="fzoo",
                                                   fzoo_n=N, zero_order_eps=EPS), **kw})


def _train(tmp_path, model, **kw):
    t = _trainer(tmp_path, model, **kw)
    t.train()
    return t, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("trainable,accum", [("full", 1), ("lora", 1), ("prefix", 1), ("head", 3)])
def test_trainer_steps_equal_the_sequential_steps(tmp_path, tiny_roberta_dir, trainable, accum):
    """3 Trainer steps with --fzoo_batched give the parameters of 3 without (float64; accum 3: micro-
    batches of 4 against one batch of 12), with N + 1 forwards counted per batch."""
    start = _model(tiny_roberta_dir, trainable).state_dict()
    ref_model, run_model = (_model(tiny_roberta_dir, trainable) for _ in range(2))
    ref_model.load_state_dict(start)
    run_model.load_state_dict(start)
    ref, ref_params = _train(tmp_path / "ref", ref_model)
    t, params = _train(tmp_path / "b", run_model, fzoo_batched=True, per_device_train_batch_size=12 // accum,
                       gradient_accumulation_steps=accum)
    assert t.zo_run.batched is not None and t.zo_run.batched.worked and t.zo_run.batched.disabled is None
    assert ref.zo_run.batched is None
    assert t.zo_run.forwards == ref.zo_run.forwards * accum == 3 * (N + 1) * accum
    for a, b in zip(params, ref_params):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    moved = [not torch.equal(a, start[k]) for a, k in zip(params, [n for n, _ in run_model.named_parameters()])]
    assert any(moved)


def test_trainer_falls_back_when_memory_is_short(tmp_path, tiny_roberta_dir, caplog, monkeypatch):
    """Full parameters (50,090 float64 numbers, 4 copies: 1.5 MiB) with 2 MiB free: over half of it,
    so a warning and exactly the sequential run."""
    start = _model(tiny_roberta_dir, "full").state_dict()
    models = [_model(tiny_roberta_dir, "full") for _ in range(2)]
    for m in models:
        m.load_state_dict(start)
    assert sum(p.numel() for p in models[1].parameters()) == 50_090
    _, ref_params = _train(tmp_path / "ref", models[0], max_steps=2)
    monkeypatch.setattr(fzoo_batched, "free_memory", lambda device: 2 * 2**20)
    with caplog.at_level(logging.WARNING, logger="mezo.training.fzoo_batched"):
        t, params = _train(tmp_path / "b", models[1], max_steps=2, fzoo_batched=True)
    assert t.zo_run.batched is None and t.train_summary()["fzoo_batched_ran"] is False
    assert any("--fzoo_batched" in r.message and "exceed half the free memory" in r.message for r in caplog.records)
    assert all(torch.equal(a, b) for a, b in zip(params, ref_params))


class DataDependent(nn.Module):
    """A model with a data-dependent branch on its parameters, which vmap cannot batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x, y):
        out = self.lin(x)
        if out.sum().item() > -1e9:    # .item() of a batched tensor: vmap raises
            out = out * 1.0
        return nn.functional.cross_entropy(out, y)


def test_model_vmap_cannot_batch_falls_back(caplog):
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    finals = []
    for batched in (False, True):
        model = DataDependent()
        params = list(model.parameters())
        method = tiny.zo_build("fzoo", params, eps=EPS, n=N)
        batcher = fzoo_batched.Batcher(model, [n for n, _ in model.named_parameters()])
        plain = lambda: model(x, y)  # noqa: E731
        loss_fn = batcher.wrap(plain, lambda m: m(x, y), 5) if batched else plain
        with caplog.at_level(logging.WARNING, logger="mezo.training.fzoo_batched"):
            for s in (1, 2):
                tiny.zo_step(method, loss_fn, s, 1e-3)
        finals.append([p.detach().clone() for p in params])
    assert batcher.disabled and not batcher.worked
    warned = [r for r in caplog.records if "cannot batch this model's forward (RuntimeError" in r.message]
    assert len(warned) == 1     # once, then the loop without retrying
    assert all(torch.equal(a, b) for a, b in zip(*finals))


class Closure(nn.Module):
    """A model that reads a parameter through a closure, where functional_call cannot swap it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 2).double()
        self.scale = nn.Parameter(torch.ones(2, dtype=torch.float64))
        scale = self.scale
        self.times_scale = lambda h: h * scale

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.times_scale(self.lin(x)), y)


def test_parameter_read_outside_the_modules_falls_back(caplog):
    """vmap would run, but with `scale` unperturbed: the guard sees the original tensor and loops."""
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    model = Closure()
    params, names = list(model.parameters()), [n for n, _ in model.named_parameters()]
    method = tiny.zo_build("fzoo", params, eps=EPS, n=N)
    seeds = method.direction_seeds(4)
    with torch.no_grad():
        sequential = method._perturbed_losses(lambda: model(x, y), seeds)
        unguarded = zo_losses.VmapLosses(names, lambda d: torch.func.functional_call(model, d, (x, y)))(
            method.noise, params, seeds, EPS)
    assert unguarded != pytest.approx(sequential, rel=1e-9, abs=0)    # what the guard prevents
    batcher = fzoo_batched.Batcher(model, names)
    loss_fn = batcher.wrap(lambda: model(x, y), lambda m: m(x, y), 5)
    with caplog.at_level(logging.WARNING, logger="mezo.training.fzoo_batched"):
        assert loss_fn.perturbed_losses(method.noise, params, seeds, EPS) is None
    assert "it reads scale outside its module attributes" in batcher.disabled
    assert "lin.weight" not in batcher.disabled
    assert any("--fzoo_batched: cannot batch" in r.message for r in caplog.records)


def _argv(tmp_path, *extra):
    data = tiny.small_uci_split(tmp_path / "d", test_rows=8)
    return ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", data,
            "--few_shot_type", "prompt", "--template", tiny.SENT_TEMPLATE, "--mapping", tiny.SENT_MAPPING,
            "--output_dir", str(tmp_path / "o"), "--log_file", str(tmp_path / "log"), "--do_train",
            "--disable_tqdm", "true", *extra]


@pytest.mark.parametrize("extra", [["--zero_order_optim", "--fzoo_batched"],
                                   ["--zero_order_optim", "--zo_method", "lozo", "--fzoo_batched"]])
def test_fzoo_batched_needs_fzoo(tmp_path, capsys, extra):
    assert run.main(_argv(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --fzoo_batched:") and "needs --zo_method fzoo" in err[-1], err
    assert not (tmp_path / "log").exists()


def test_run_py_head_tuning_batched(tmp_path, monkeypatch):
    """run.py end to end: head tuning of splade-tiny with --fzoo_batched trains batched and records the flag."""
    calls = []
    vmap_losses = zo_losses.VmapLosses.losses
    monkeypatch.setattr(zo_losses.VmapLosses, "losses", lambda self, *a: calls.append(1) or vmap_losses(self, *a))
    argv = _argv(tmp_path, "--zero_order_optim", "--efficient_zero_order", "--zo_method", "fzoo", "--fzoo_n", "3",
                 "--fzoo_batched", "--head_tuning", "--max_steps", "2", "--per_device_train_batch_size", "4",
                 "--learning_rate", "1e-7")
    assert run.main(argv) == 0
    assert len(calls) == 2     # one batched forward per step
    rec = json.loads((tmp_path / "log").read_text().splitlines()[0])
    assert rec["fzoo_batched"] is True and rec["fzoo_batched_ran"] is True and rec["global_step"] == 2
    assert rec["zo_forward_steps"] == 2 * (3 + 1)


def test_public_code_rule_is_the_library_rule_with_lr_rescaled():
    """The docstring's claim about DKmiyan/FZOO trainer.py: its update, theta -= lr_c / (N sigma_0)
    sum_i (l_i - l0) u_i with sigma_0 the N-denominator std and no eps, is the library's with
    lr = lr_c eps sqrt(N / (N - 1)). Re-stated literally on a float64 MLP over 3 steps."""
    import math

    import numpy as np
    from mezo.zo.noise import RademacherNoise, sub_seed
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    x = torch.randn(11, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=torch.Generator().manual_seed(2))
    theta = start = [p.detach().clone() for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]

    def L(ps):
        return float(nn.functional.cross_entropy(torch.func.functional_call(model, dict(zip(names, ps)), (x,)), y))
    lr_c, noise = 1e-4, RademacherNoise()
    for s in (5, 6, 7):
        us = [noise.draw_z(theta, sub_seed(s, k, b"fzoo-dir")) for k in range(N)]
        ls = [L([t + EPS * u for t, u in zip(theta, uk)]) for uk in us]
        l0, sigma0 = L(theta), float(np.std(ls))          # numpy's default: N in the denominator
        theta = [t - lr_c * sum((li - l0) / (N * sigma0) * uk[j] for li, uk in zip(ls, us))
                 for j, t in enumerate(theta)]
    params = list(model.parameters())
    method = tiny.zo_build("fzoo", params, eps=EPS, n=N)
    with torch.no_grad():
        for s in (5, 6, 7):
            tiny.zo_step(method, lambda: nn.functional.cross_entropy(model(x), y), s, lr_c * EPS * math.sqrt(N / (N - 1)))
    for p, t in zip(params, theta):
        torch.testing.assert_close(p.detach(), t, rtol=1e-9, atol=1e-12)
    assert all(not torch.equal(t, t0) for t, t0 in zip(theta, start))
