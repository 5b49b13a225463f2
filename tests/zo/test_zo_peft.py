"""The fast MeZO step is the plain algorithm (docs/behaviour.md, "The MeZO step") also for LoRA and prefix-tuning runs."""
import copy

import pytest
import torch
from transformers import AutoModelForMaskedLM

from mezo.zo import step as zo
from mezo.zo.backend import FastNoise
from mezo.models.lora import inject_lora
from mezo.models.prompt_mlm import PromptMLM
from mezo.models.prefix import inject_prefix


def _model(path, kind):
    torch.manual_seed(0)
    model = PromptMLM(AutoModelForMaskedLM.from_pretrained(path), 2, [10, 20]).eval()
    if kind == "lora":
        inject_lora(model, r=4, alpha=8)
        for n, p in model.named_parameters():
            p.requires_grad_("lora_" in n or not n.startswith("roberta"))
    else:
        inject_prefix(model, num_prefix=3, reparam=False)
        for n, p in model.named_parameters():
            p.requires_grad_("prefix" in n)
    return model


def _plain_steps(model, batch, seeds, eps, lr, wd):
    """The MeZO step literally: +εz, loss, −2εz, loss, +εz (restore), θ ← θ − lr(g z + wd θ)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for s in seeds:
            z = FastNoise().draw_z(params, s)
            for p, zz in zip(params, z):
                p.add_(eps * zz)
            lp = model(**batch).loss.item()
            for p, zz in zip(params, z):
                p.sub_(2 * eps * zz)
            lm = model(**batch).loss.item()
            g = (lp - lm) / (2 * eps)
            for p, zz in zip(params, z):
                p.add_(eps * zz)
                p.sub_(lr * (g * zz + wd * p))


@pytest.mark.parametrize("kind", ["lora", "prefix"])
@pytest.mark.parametrize("cache_z", [False, True])
@pytest.mark.parametrize("workers", [1, 2])
def test_fast_step_equals_plain_algorithm(tiny_roberta_dir, kind, cache_z, workers):
    torch.manual_seed(1)
    batch = {"input_ids": torch.randint(5, 300, (4, 7)), "mask_pos": torch.tensor([1, 2, 3, 4]),
             "labels": torch.tensor([0, 1, 1, 0])}
    fast = _model(tiny_roberta_dir, kind)
    plain = copy.deepcopy(fast)
    before = {n: p.detach().clone() for n, p in fast.named_parameters()}
    seeds, eps, lr, wd = [11, 22, 33], 1e-3, 1e-2, 0.1
    _plain_steps(plain, batch, seeds, eps, lr, wd)
    engine = FastNoise(workers=workers, cache_z=cache_z)
    params = [p for p in fast.parameters() if p.requires_grad]
    with torch.no_grad():
        for s in seeds:
            zo.mezo_step(params, lambda: fast(**batch).loss, engine, s, eps=eps, lr=lr, weight_decay=wd)
    plain_params = dict(plain.named_parameters())
    for n, p in fast.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[n])
            torch.testing.assert_close(p, plain_params[n], atol=1e-5, rtol=1e-4)
        else:
            assert torch.equal(p, before[n])  # frozen base weights are never touched
