"""LoRA on the query and value projections of every self-attention block (docs/behaviour.md, "LoRA").

Module surgery on the stock Hugging Face model: each self-attention module of a RoBERTa/BERT
style encoder holds `query`, `key` and `value` nn.Linear attributes; `query` and `value` are
replaced by `loralib.Linear` layers computing

    y = W x + b + (alpha / r) · B (A x),   A ∈ R^{r×in} (Kaiming-uniform, a=√5), B ∈ R^{out×r} (zeros)

with the pretrained W, b copied in and frozen, and LoRA dropout 0.

Weights are never merged: loralib ≥ 0.1.2 folds B·A into W when a layer switches to eval mode
(`train(False)`) and from then on ignores A and B. MeZO runs every forward in eval mode, so with
merging MeZO-LoRA would perturb A and B without any effect on the loss (README, Differences from
the original code: LoRA under MeZO). The layers are therefore built with `merge_weights=False`,
and `inject_lora` checks it.

Parameter names gain `.lora_A` / `.lora_B` (e.g. `roberta.encoder.layer.0.attention.self.query.lora_A`),
which is what the freezing rules (`mezo.models.prompt_mlm.set_trainable`) look for.
"""
import loralib
import torch
from torch import nn

from mezo.errors import UsageError
from mezo.models.surgery import self_attentions

TARGETS = ("query", "value")


class LoRALinear(loralib.Linear):
    """loralib.Linear with its LoRA term added out of place: the same numbers, and torch.func.vmap can
    batch it (--fzoo_batched: W x is unbatched when only A, B are stacked; an in-place add cannot widen it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.transpose(0, 1) if self.fan_in_fan_out else self.weight
        result = nn.functional.linear(x, w, bias=self.bias)
        if self.r > 0 and not self.merged:
            result = result + (self.lora_dropout(x) @ self.lora_A.transpose(0, 1)
                               @ self.lora_B.transpose(0, 1)) * self.scaling
        return result


def lora_linear(base: nn.Linear, r: int, alpha: int) -> loralib.Linear:
    """A never-merging loralib.Linear carrying a copy of `base`'s weight and bias."""
    w = base.weight
    layer = LoRALinear(base.in_features, base.out_features, r=r, lora_alpha=alpha, lora_dropout=0.0,
                           merge_weights=False, bias=base.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        if base.bias is not None:
            layer.bias.copy_(base.bias)
    layer.weight.requires_grad_(False)
    if layer.merge_weights or layer.merged:  # the guard against the eval-mode merge (docs/behaviour.md, "LoRA")
        raise RuntimeError("loralib.Linear was built with weight merging on; MeZO-LoRA would train nothing")
    layer.train(base.training)
    return layer


def inject_lora(model: nn.Module, r: int, alpha: int) -> int:
    """Replace `query` and `value` of every self-attention by LoRA linears; returns #LoRA parameters."""
    if not r or r < 1:
        raise UsageError(f"--lora_r {r}: must be >= 1")
    attentions = self_attentions(model, "--apply_lora")
    added = 0
    for _, attn in attentions:
        for target in TARGETS:
            layer = lora_linear(getattr(attn, target), r, alpha)
            setattr(attn, target, layer)
            added += layer.lora_A.numel() + layer.lora_B.numel()
    return added
