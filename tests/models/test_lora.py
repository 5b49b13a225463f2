"""LoRA surgery (mezo.models.lora): hand computation, no eval-mode merging, freezing, Adam and MeZO steps."""
import math

import loralib
import pytest

import tiny
import torch
from transformers import AutoModelForMaskedLM

from mezo.config.arguments import AdapterArguments
from mezo.errors import UsageError
from mezo.models.lora import inject_lora
from mezo.models.prompt_mlm import PromptMLM, count_trainable, set_trainable

WORDS = [5, 6]



def lora_parameter_count(num_layers: int, hidden: int, r: int) -> int:
    """The paper's count for square query/value projections: layers x 2 x (r h + h r)."""
    return num_layers * 2 * (r * hidden + hidden * r)

def _args(apply_lora=True, lora_freeze_head=False):
    return (AdapterArguments(apply_lora=apply_lora, lora_r=4, lora_alpha=8, lora_freeze_head=lora_freeze_head),)


def _model(path, r=4, alpha=8, freeze_head=False):
    model = PromptMLM(AutoModelForMaskedLM.from_pretrained(path), 2, WORDS)
    inject_lora(model, r=r, alpha=alpha)
    set_trainable(model, *_args(lora_freeze_head=freeze_head))
    return model


def _batch(seed=0, batch=4, length=9, vocab=300):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    att = torch.ones_like(ids)
    att[0, 6:] = 0
    ids[0, 6:] = 1
    return dict(input_ids=ids, attention_mask=att, mask_pos=torch.tensor([2, 3, 4, 5])[:batch],
                labels=torch.arange(batch) % 2)


def _lora_layers(model):
    return [m for m in model.modules() if isinstance(m, loralib.Linear)]


def mezo_step(params, loss_fn, seed, eps=1e-3, lr=1e-2):
    """mezo.zo.step.mezo_step (the trainer's)."""
    from mezo.zo import FastNoise, mezo_step
    return mezo_step(params, loss_fn, FastNoise(), seed, eps=eps, lr=lr)


def test_query_value_replaced_and_count(tiny_roberta_dir):
    model = _model(tiny_roberta_dir, r=4)
    cfg = model.config
    layers = _lora_layers(model)
    assert len(layers) == 2 * cfg.num_hidden_layers
    for name, m in model.named_modules():
        if name.endswith("attention.self"):
            assert isinstance(m.query, loralib.Linear) and isinstance(m.value, loralib.Linear)
            assert type(m.key) is torch.nn.Linear
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert lora == lora_parameter_count(cfg.num_hidden_layers, cfg.hidden_size, 4) == 2 * 2 * (4 * 32 + 32 * 4)
    # RoBERTa-large at r = 8 (docs/behaviour.md, "LoRA")
    assert lora_parameter_count(24, 1024, 8) == 786_432
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("lm_head.", "classifier.")))
    assert count_trainable(model) == lora + head
    set_trainable(model, *_args(lora_freeze_head=True))
    assert count_trainable(model) == lora
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {n for n, _ in model.named_parameters() if "lora_" in n}


def test_init_and_copy_of_pretrained_weights(tiny_roberta_dir):
    stock = AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir).eval()
    model = _model(tiny_roberta_dir).eval()
    q0 = stock.roberta.encoder.layer[1].attention.self.value
    q = model.roberta.encoder.layer[1].attention.self.value
    assert torch.equal(q.weight, q0.weight) and torch.equal(q.bias, q0.bias)
    assert not q.weight.requires_grad and q.lora_A.requires_grad and q.lora_B.requires_grad
    assert torch.count_nonzero(q.lora_B) == 0
    bound = 1 / math.sqrt(q.in_features)  # Kaiming-uniform with a = sqrt(5)
    assert q.lora_A.abs().max() <= bound and q.lora_A.abs().max() > 0.5 * bound
    assert q.scaling == 2.0 and not q.merge_weights
    # B = 0: the model computes exactly what the stock one does
    b = _batch()
    with torch.no_grad():
        ref = stock(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        ref = ref[torch.arange(4), b["mask_pos"]][:, WORDS]
        torch.testing.assert_close(model(**b).logits, ref)


@pytest.mark.parametrize("which", ["tiny_roberta_dir", "tiny_bert_dir"])
def test_eval_mode_output_depends_on_A_and_B(which, request):
    """Guards the loralib >= 0.1.2 merge: in eval mode the LoRA branch must still be computed."""
    model = _model(request.getfixturevalue(which))
    model.train()
    model.eval()  # train(False) is what merges in loralib >= 0.1.2 with merge_weights=True
    assert all(not m.merged for m in _lora_layers(model))
    b = _batch()
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    with torch.no_grad():
        base = model(**b).logits
        layer = model.get_submodule(f"{model.base_prefix}.encoder.layer.0.attention.self.query")
        layer.lora_B.normal_()
        with_b = model(**b).logits
        layer.lora_A.mul_(2.0)
        with_a = model(**b).logits
    assert not torch.allclose(base, with_b) and not torch.allclose(with_b, with_a)
    for n, p in model.named_parameters():  # nothing merged into W
        if "lora_" not in n:
            assert torch.equal(p, weights[n]), n


def test_layer_equals_hand_computation(tiny_bert_dir):
    model = _model(tiny_bert_dir, r=4, alpha=16).eval()
    layer = model.bert.encoder.layer[0].attention.self.value
    torch.manual_seed(1)
    with torch.no_grad():
        layer.lora_B.normal_()
        x = torch.randn(3, 5, layer.in_features)
        y = layer(x)
    W, b, A, B = layer.weight, layer.bias, layer.lora_A, layer.lora_B
    expect = x @ W.T + b + (16 / 4) * (x @ A.T @ B.T)
    torch.testing.assert_close(y, expect)


def test_other_architecture_is_usage_error():
    from transformers import OPTConfig, OPTForCausalLM
    opt = OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=20,
                                   num_attention_heads=2, word_embed_proj_dim=16, max_position_embeddings=20))
    with pytest.raises(UsageError, match=r"--apply_lora.*'opt'"):
        inject_lora(opt, r=2, alpha=4)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("which", ["tiny_roberta_dir", "splade_dir"])
def test_adam_step_trains_lora_and_head_only(which, request):
    model = _model(request.getfixturevalue(which))
    model.train()
    torch.manual_seed(0)
    for m in _lora_layers(model):  # B != 0 so that A gets a gradient too
        torch.nn.init.normal_(m.lora_B, std=0.1)
    before = _snapshot(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(**_batch()).loss.backward()
    opt.step()
    changed = _changed(model, before)
    prefix = model.base_prefix
    assert not any(n.startswith(prefix) and "lora_" not in n for n in changed), changed
    assert {n for n in before if "lora_" in n} <= changed
    assert any(n.startswith(model.head_name) for n in changed)


@pytest.mark.parametrize("freeze_head", [False, True])
def test_mezo_step_trains_lora_in_eval_mode(tiny_roberta_dir, freeze_head):
    model = _model(tiny_roberta_dir, freeze_head=freeze_head).eval()
    before = _snapshot(model)
    params = [p for p in model.parameters() if p.requires_grad]
    b = _batch()
    with torch.no_grad():
        loss0 = model(**b).loss
        out = mezo_step(params, lambda: model(**b).loss, seed=1234, eps=1e-3, lr=1e-2)
    assert not out.skipped and out.loss_plus != out.loss_minus  # the perturbation moved the eval-mode loss
    changed = _changed(model, before)
    lora = {n for n in before if "lora_" in n}
    head = {n for n in before if n.startswith(("lm_head.", "classifier."))}
    assert lora <= changed
    assert changed == (lora if freeze_head else lora | head)
    with torch.no_grad():
        assert model(**b).loss != loss0


def test_mezo_lora_only_moves_loss_through_lora(tiny_roberta_dir):
    """With the head frozen, the two-sided loss difference comes from A and B alone (eval mode)."""
    model = _model(tiny_roberta_dir, freeze_head=True).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.shape[0] == 4 or p.shape[1] == 4 for p in params)  # only r = 4 LoRA factors
    b = _batch()
    with torch.no_grad():
        out = mezo_step(params, lambda: model(**b).loss, seed=7, eps=1e-2, lr=0.0)
    assert abs(out.loss_plus - out.loss_minus) > 1e-6


def _small_data(tmp_path, repo_root):
    """The committed uci-sentiment 16-42 split with the test set cut to 40 sentences."""
    return tiny.small_uci_split(tmp_path / "data", 40)


def run_small(tmp_path, repo_root, *extra):
    """run.py on splade-tiny with MeZO for 4 steps; returns the record and the saved trainable weights."""
    import json

    from mezo.cli import run
    out, log = tmp_path / "out", tmp_path / "log"
    argv = ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment",
            "--data_dir", _small_data(tmp_path, repo_root), "--few_shot_type", "prompt",
            "--template", "*cls**sent_0*_It_was*mask*.*sep+*", "--mapping", "{0:'terrible',1:'great'}",
            "--output_dir", str(out), "--log_file", str(log), "--do_train", "--do_eval", "--do_predict",
            "--per_device_eval_batch_size", "64", "--seed", "42", "--num_k", "16", "--tag", "t",
            "--disable_tqdm", "true", "--max_steps", "4", "--eval_steps", "2", "--evaluate_during_training",
            "--zero_order_optim", "--efficient_zero_order", "--per_device_train_batch_size", "16",
            "--optimizer", "sgd", "--lr_scheduler_type", "constant", "--save_at_last", *extra]
    assert run.main(argv) == 0
    return json.loads(log.read_text()), torch.load(out / "trainable_weights.pt")


def test_run_mezo_lora_trains_lora(tmp_path, repo_root):
    rec, saved = run_small(tmp_path, repo_root, "--apply_lora", "--lora_r", "8", "--lora_alpha", "16",
                           "--lora_freeze_head", "--learning_rate", "1e-2", "--zero_order_eps", "1e-3")
    assert rec["trainable_params"] == lora_parameter_count(2, 128, 8) == sum(v.numel() for v in saved.values())
    assert all("lora_" in n for n in saved)
    assert all(torch.count_nonzero(v) > 0 for n, v in saved.items() if n.endswith("lora_B"))  # B moved off 0
