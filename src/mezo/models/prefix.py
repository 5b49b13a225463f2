"""Prefix tuning: P learned key/value vectors prepended in each self-attention (docs/behaviour.md, "Prefix tuning").

Each layer attends over [prefix ; sequence] keys and values; the P prefix positions are always
visible; queries, positions and the output length are unchanged.

Seam in transformers 5.x (RoBERTa/BERT): the stock self-attention forward projects `key`/`value`,
then, if it received a `cache`, replaces them by `cache.update(key, value, layer_idx, ...)`, and
passes them with `attention_mask` to the configured attention function (eager or SDPA). A forward
pre-hook on each self-attention module therefore

  * passes a `cache` whose `update` returns [prefix ; key] and [prefix ; value] (the reference
    feeds its prefixes as "past key values" in the same way), and
  * prepends P always-visible columns to the 4-D attention mask the model built (an additive float
    mask for eager: 0; a boolean mask for SDPA: True; None stays None = everything visible).

No Hugging Face modelling code is copied or replaced; a forward hook checks that the stock forward
really consumed the prefixes, so a transformers change of that seam fails loudly, not silently.

Parameters (names contain `prefix`, the only ones the freezing rule keeps trainable):
  * direct (`--no_reparam`): `<…>.attention.prefix_keys`, `<…>.attention.prefix_values` ∈ R^{P×hidden},
    N(0, 1) or, with `--prefix_init_by_real_act`, the key/value projections of P random tokens;
  * reparameterised (default): one shared `prefix_input_embeds` E ∈ R^{P×512} ~ N(0, 1) on the top
    model, and per layer `<…>.attention.prefix_mlp_keys` / `prefix_mlp_values` =
    Linear(512, 512) → tanh → Linear(512, hidden), evaluated on E at every forward.
"""
import torch
from torch import nn

from mezo.errors import UsageError
from mezo.models.surgery import find_self_attentions, self_attentions

EMBED_DIM = 512
MID_DIM = 512


class _PrependKV:
    """Stands in for a Cache: the stock forward calls `update(k, v, layer_idx, ...)` and attends over the result."""

    def __init__(self, keys, values):
        self.keys, self.values, self.used = keys, values, False

    def update(self, key_states, value_states, *args, **kwargs):
        self.used = True
        return torch.cat([self.keys, key_states], dim=2), torch.cat([self.values, value_states], dim=2)


def extend_mask(mask, num_prefix: int):
    """Prepend `num_prefix` always-visible key positions to a 4-D attention mask (last dim = keys)."""
    if mask is None:
        return None
    if not torch.is_tensor(mask):
        raise TypeError(f"prefix tuning supports tensor attention masks (eager/sdpa), got {type(mask).__name__}")
    visible = True if mask.dtype == torch.bool else 0.0
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise TypeError(f"prefix tuning: unexpected attention mask dtype {mask.dtype}")
    pad = mask.new_full((*mask.shape[:-1], num_prefix), visible)
    return torch.cat([pad, mask], dim=-1)


def _mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(EMBED_DIM, MID_DIM), nn.Tanh(), nn.Linear(MID_DIM, hidden))


def _attention_blocks(model):
    """(attention block, its self-attention) pairs: prefixes live on the block (`…attention`)."""
    selfs = self_attentions(model, "--prefix_tuning")
    modules = dict(model.named_modules())
    blocks = []
    for name, attn in selfs:
        parent = modules[name.rsplit(".", 1)[0]] if "." in name else model
        blocks.append((parent, attn))
    return blocks


def _encoder(model):
    enc = getattr(model, "encoder_model", None)  # PromptMLM
    return enc if enc is not None else model.base_model


@torch.no_grad()
def real_activations(model, num_prefix: int):
    """Key and value projections (each P×hidden) per self-attention of P uniformly random tokens.

    The token ids come from the global torch RNG over the whole vocabulary; the bare encoder runs
    on that 1×P sequence (no special tokens, no mask) in eval mode on the model's own device.
    """
    encoder = _encoder(model)
    device = next(encoder.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (1, num_prefix), dtype=torch.long).to(device)
    selfs = [a for _, a in find_self_attentions(encoder)]
    acts = {}
    hooks = []
    for i, attn in enumerate(selfs):
        for which in ("key", "value"):
            def grab(_mod, _inp, out, key=(i, which)):
                acts[key] = out[0].detach().clone()
            hooks.append(getattr(attn, which).register_forward_hook(grab))
    was_training = encoder.training
    encoder.eval()
    try:
        encoder(input_ids=ids)
    finally:
        encoder.train(was_training)
        for h in hooks:
            h.remove()
    return ids, [(acts[(i, "key")], acts[(i, "value")]) for i in range(len(selfs))]


def inject_prefix(model: nn.Module, num_prefix: int, reparam: bool = True, init_by_real_act: bool = False) -> int:
    """Add prefixes to every self-attention of `model`; returns the number of prefix parameters."""
    if num_prefix < 1:
        raise UsageError(f"--num_prefix {num_prefix}: must be >= 1")
    if init_by_real_act and reparam:
        raise UsageError("--prefix_init_by_real_act: needs --no_reparam")
    impl = getattr(model.config, "_attn_implementation", "eager")
    if impl not in ("eager", "sdpa"):
        raise UsageError(f"--prefix_tuning: attention implementation {impl!r} is not supported (eager, sdpa)")
    blocks = _attention_blocks(model)
    init = real_activations(model, num_prefix)[1] if init_by_real_act else None
    ref = blocks[0][1].key.weight
    hidden, heads = model.config.hidden_size, model.config.num_attention_heads
    if reparam:
        model.prefix_input_embeds = nn.Parameter(torch.randn(num_prefix, EMBED_DIM, device=ref.device,
                                                             dtype=ref.dtype))
    for i, (block, attn) in enumerate(blocks):
        if reparam:
            block.prefix_mlp_keys = _mlp(hidden).to(device=ref.device, dtype=ref.dtype)
            block.prefix_mlp_values = _mlp(hidden).to(device=ref.device, dtype=ref.dtype)
        elif init is not None:
            block.prefix_keys = nn.Parameter(init[i][0].clone())
            block.prefix_values = nn.Parameter(init[i][1].clone())
        else:
            block.prefix_keys = nn.Parameter(torch.randn(num_prefix, hidden, device=ref.device, dtype=ref.dtype))
            block.prefix_values = nn.Parameter(torch.randn(num_prefix, hidden, device=ref.device, dtype=ref.dtype))
        _install(block, attn, (lambda: model.prefix_input_embeds) if reparam else None, num_prefix, heads)
    return sum(p.numel() for n, p in model.named_parameters() if "prefix" in n)


def prefix_states(block, embeds=None):
    """This layer's prefix keys and values, each P×hidden."""
    if embeds is not None:
        return block.prefix_mlp_keys(embeds), block.prefix_mlp_values(embeds)
    return block.prefix_keys, block.prefix_values


def _install(block, attn, embeds, num_prefix, heads):
    pending = []

    def pre_hook(_mod, args, kwargs):
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            raise RuntimeError("prefix tuning cannot be combined with a key/value cache")
        hidden_states = args[0] if args else kwargs["hidden_states"]
        batch = hidden_states.shape[0]
        # E looked up on the model at each call (not captured), so torch.func.functional_call can swap it
        keys, values = prefix_states(block, None if embeds is None else embeds())

        def split(x):  # (P, hidden) -> (batch, heads, P, head_dim), as the stock forward lays out keys
            return x.view(1, num_prefix, heads, -1).transpose(1, 2).expand(batch, -1, -1, -1)

        kv = _PrependKV(split(keys), split(values))
        pending[:] = [kv]
        kwargs["cache"] = kv
        if len(args) > 1:  # attention_mask passed positionally
            args = (args[0], extend_mask(args[1], num_prefix), *args[2:])
        else:
            kwargs["attention_mask"] = extend_mask(kwargs.get("attention_mask"), num_prefix)
        return args, kwargs

    def post_hook(_mod, _args, _out):
        kv = pending.pop()
        if not kv.used:
            raise RuntimeError(f"prefix tuning: {type(attn).__name__}.forward ignored the prefix keys/values "
                               "(the transformers seam this module relies on has changed)")

    attn.register_forward_pre_hook(pre_hook, with_kwargs=True)
    attn.register_forward_hook(post_hook)
