"""Prefix tuning (mezo.models.prefix): attention over [prefix; sequence] by hand, mask extension with
padding, eager and SDPA, parameter counts, real-activation init, Adam and MeZO steps."""

import pytest
import torch
from transformers import AutoModelForMaskedLM

from mezo.config.arguments import AdapterArguments
from mezo.errors import UsageError
from mezo.models.prompt_mlm import PromptMLM, count_trainable, set_trainable
from mezo.models.prefix import EMBED_DIM, MID_DIM, inject_prefix

WORDS = [5, 6]
P = 3


def _args():
    return (AdapterArguments(prefix_tuning=True),)


def _mlm(path, impl="sdpa"):
    return AutoModelForMaskedLM.from_pretrained(path, attn_implementation=impl)


def _model(path, impl="sdpa", reparam=False, real_act=False, num_prefix=P):
    model = PromptMLM(_mlm(path, impl), 2, WORDS)
    inject_prefix(model, num_prefix=num_prefix, reparam=reparam, init_by_real_act=real_act)
    set_trainable(model, *_args())
    return model


def _batch(seed=0, batch=4, length=9, vocab=300, pad_id=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    att = torch.ones_like(ids)
    att[0, 6:] = 0  # padding at the end of two rows
    att[2, 4:] = 0
    ids[att == 0] = pad_id
    return dict(input_ids=ids, attention_mask=att, mask_pos=torch.tensor([2, 3, 1, 5])[:batch],
                labels=torch.arange(batch) % 2)


def mezo_step(params, loss_fn, seed, eps=1e-3, lr=1e-2):
    """mezo.zo.step.mezo_step (the trainer's)."""
    from mezo.zo import FastNoise, mezo_step
    return mezo_step(params, loss_fn, FastNoise(), seed, eps=eps, lr=lr)


def _hand_attention(attn, h, pk, pv, att2d):
    """softmax(q [pk; k]^T / sqrt(d) + mask) [pv; v], heads merged; mask: prefixes visible, padding not."""
    B, L, H = h.shape
    heads = attn.config.num_attention_heads
    d = H // heads

    def split(x):  # (B, T, H) -> (B, heads, T, d)
        return x.reshape(x.shape[0], x.shape[1], heads, d).transpose(1, 2)

    q = split(h @ attn.query.weight.T + attn.query.bias)
    k = split(torch.cat([pk.expand(B, -1, -1), h @ attn.key.weight.T + attn.key.bias], 1))
    v = split(torch.cat([pv.expand(B, -1, -1), h @ attn.value.weight.T + attn.value.bias], 1))
    visible = torch.cat([torch.ones(B, pk.shape[0], dtype=torch.bool), att2d.bool()], 1)
    scores = (q @ k.transpose(-1, -2)) / d ** 0.5
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, H)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("which", ["tiny_roberta_dir", "tiny_bert_dir"])
@pytest.mark.parametrize("layer", [0, 1])
def test_prefixed_attention_equals_hand_computation(which, impl, layer, request):
    model = _model(request.getfixturevalue(which), impl).eval()
    assert model.config._attn_implementation == impl
    block = model.encoder_model.encoder.layer[layer].attention
    seen = {}

    def grab(_mod, args, kwargs, out):
        seen["h"], seen["out"] = (args[0] if args else kwargs["hidden_states"]), out[0]

    block.self.register_forward_hook(grab, with_kwargs=True)
    b = _batch()
    with torch.no_grad():
        model(**b)
        expect = _hand_attention(block.self, seen["h"], block.prefix_keys, block.prefix_values, b["attention_mask"])
    assert seen["out"].shape == seen["h"].shape  # output length unchanged
    torch.testing.assert_close(seen["out"], expect, atol=1e-5, rtol=1e-5)
    # the prefixes matter
    no_prefix = _hand_attention(block.self, seen["h"], block.prefix_keys[:0], block.prefix_values[:0],
                                b["attention_mask"])
    assert not torch.allclose(seen["out"], no_prefix, atol=1e-3)


@pytest.mark.parametrize("reparam", [False, True])
def test_eager_and_sdpa_agree(tiny_roberta_dir, reparam):
    outs = []
    for impl in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = _model(tiny_roberta_dir, impl, reparam=reparam).eval()
        with torch.no_grad():
            outs.append(model(**_batch()).logits)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


def test_parameter_counts_and_freezing(tiny_roberta_dir):
    L, H = 2, 32
    direct = _model(tiny_roberta_dir, reparam=False, num_prefix=5)
    assert count_trainable(direct) == L * 2 * 5 * H
    assert 24 * 2 * 5 * 1024 == 245_760  # RoBERTa-large, P = 5 (docs/behaviour.md, "Prefix tuning")
    names = {n for n, p in direct.named_parameters() if p.requires_grad}
    assert names == {f"roberta.encoder.layer.{i}.attention.prefix_{kv}" for i in range(L) for kv in ("keys", "values")}
    assert all(direct.get_parameter(n).shape == (5, H) for n in names)
    rep = _model(tiny_roberta_dir, reparam=True, num_prefix=5)
    mlp = EMBED_DIM * MID_DIM + MID_DIM + MID_DIM * H + H
    assert count_trainable(rep) == 5 * EMBED_DIM + L * 2 * mlp
    assert all("prefix" in n for n, p in rep.named_parameters() if p.requires_grad)
    assert rep.prefix_input_embeds.shape == (5, EMBED_DIM)


def test_reparam_prefix_is_mlp_of_shared_embedding(tiny_bert_dir):
    model = _model(tiny_bert_dir, impl="eager", reparam=True).eval()
    block = model.bert.encoder.layer[1].attention
    seen = {}
    block.self.register_forward_hook(lambda m, a, k, o: seen.update(h=a[0] if a else k["hidden_states"], out=o[0]),
                                     with_kwargs=True)
    b = _batch()
    with torch.no_grad():
        model(**b)
        E = model.prefix_input_embeds
        mk, mv = block.prefix_mlp_keys, block.prefix_mlp_values
        pk = mk[2](torch.tanh(mk[0](E)))
        pv = mv[2](torch.tanh(mv[0](E)))
        expect = _hand_attention(block.self, seen["h"], pk, pv, b["attention_mask"])
    torch.testing.assert_close(seen["out"], expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", ["tiny_roberta_dir", "splade_dir"])
def test_real_activation_init(which, request):
    path = request.getfixturevalue(which)
    model = PromptMLM(_mlm(path), 2, WORDS)
    model.train()
    torch.manual_seed(123)
    inject_prefix(model, num_prefix=4, reparam=False, init_by_real_act=True)
    assert model.training and model.encoder_model.training  # mode restored
    torch.manual_seed(123)
    ids = torch.randint(0, model.config.vocab_size, (1, 4))
    stock = _mlm(path, "eager").eval()
    base = stock.base_model
    with torch.no_grad():
        hs = base(input_ids=ids, output_hidden_states=True).hidden_states
        for i, layer in enumerate(base.encoder.layer):
            block = model.encoder_model.encoder.layer[i].attention
            torch.testing.assert_close(block.prefix_keys, layer.attention.self.key(hs[i])[0])
            torch.testing.assert_close(block.prefix_values, layer.attention.self.value(hs[i])[0])
    assert model.encoder_model.encoder.layer[0].attention.prefix_keys.device.type == "cpu"


def test_usage_errors():
    from transformers import OPTConfig, OPTForCausalLM
    opt = OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=20,
                                   num_attention_heads=2, word_embed_proj_dim=16, max_position_embeddings=20))
    with pytest.raises(UsageError, match=r"--prefix_tuning.*'opt'"):
        inject_prefix(opt, num_prefix=2, reparam=False)
    with pytest.raises(UsageError, match="--prefix_init_by_real_act"):
        inject_prefix(opt, num_prefix=2, reparam=True, init_by_real_act=True)


def test_seam_change_fails_loudly(tiny_roberta_dir):
    model = _model(tiny_roberta_dir).eval()
    attn = model.roberta.encoder.layer[0].attention.self
    attn.forward = lambda hidden_states, attention_mask=None, cache=None, **kw: (hidden_states, None)
    with pytest.raises(RuntimeError, match="ignored the prefix"):
        model(**_batch())


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("reparam", [False, True])
@pytest.mark.parametrize("which", ["tiny_roberta_dir", "splade_dir"])
def test_adam_step_changes_only_prefixes(which, reparam, request):
    model = _model(request.getfixturevalue(which), reparam=reparam)
    model.train()
    before = _snapshot(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(**_batch()).loss.backward()
    opt.step()
    changed = _changed(model, before)
    assert changed == {n for n in before if "prefix" in n}


@pytest.mark.parametrize("reparam", [False, True])
def test_mezo_step_changes_only_prefixes(tiny_bert_dir, reparam):
    model = _model(tiny_bert_dir, reparam=reparam).eval()
    before = _snapshot(model)
    params = [p for p in model.parameters() if p.requires_grad]
    b = _batch()
    with torch.no_grad():
        out = mezo_step(params, lambda: model(**b).loss, seed=99, eps=1e-1, lr=1e-2)
    assert not out.skipped and out.loss_plus != out.loss_minus
    assert _changed(model, before) == {n for n in before if "prefix" in n}


def test_run_mezo_prefix_real_act(tmp_path, repo_root):
    from test_lora import run_small
    rec, saved = run_small(tmp_path, repo_root, "--prefix_tuning", "--num_prefix", "5", "--no_reparam",
                           "--prefix_init_by_real_act", "--learning_rate", "1e-2", "--zero_order_eps", "1e-1")
    assert rec["trainable_params"] == 2 * 2 * 5 * 128 == sum(v.numel() for v in saved.values())
    assert sorted(saved) == sorted(f"bert.encoder.layer.{i}.attention.prefix_{kv}"
                                   for i in range(2) for kv in ("keys", "values"))
