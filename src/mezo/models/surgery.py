"""Module surgery shared by the adapters: where LoRA and prefixes attach in a stock encoder.

Both adapters need the same thing from a RoBERTa/BERT-style model: every self-attention module,
recognised by its ``query``, ``key`` and ``value`` ``nn.Linear`` attributes (the layout of the
Hugging Face implementations, not a class name, so any family with that layout works).
"""
from torch import nn

from mezo.errors import UsageError


def find_self_attentions(model: nn.Module):
    """(name, module) of every self-attention with ``query``, ``key``, ``value`` nn.Linear projections."""
    return [(name, module) for name, module in model.named_modules()
            if all(isinstance(getattr(module, a, None), nn.Linear) for a in ("query", "key", "value"))]


def self_attentions(model: nn.Module, flag: str):
    """``find_self_attentions``, or a one-line error naming ``flag`` when the model has none."""
    found = find_self_attentions(model)
    if not found:
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise UsageError(f"{flag}: model type {kind!r} is not supported (needs RoBERTa/BERT-style "
                         "self-attention with query/key/value linear layers)")
    return found
