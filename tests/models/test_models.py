
import pytest
import torch
from transformers import AutoModelForMaskedLM

from mezo.config.arguments import AdapterArguments
from mezo.errors import UsageError
from mezo.models.prompt_mlm import PromptMLM, count_trainable, set_trainable


def _args(**kw):
    return (AdapterArguments(**kw),)


@pytest.mark.parametrize("which", ["tiny_roberta_dir", "tiny_bert_dir", "splade_dir"])
def test_label_logits_equal_full_mlm_logits_at_mask(which, request):
    mlm = AutoModelForMaskedLM.from_pretrained(request.getfixturevalue(which)).eval()
    torch.manual_seed(0)
    ids = torch.randint(5, 300, (3, 9))
    att = torch.ones_like(ids)
    att[0, 7:] = 0
    mask_pos = torch.tensor([2, 4, 8])
    words = [17, 42, 99]
    with torch.no_grad():
        full = mlm(input_ids=ids, attention_mask=att).logits[torch.arange(3), mask_pos][:, words]
        model = PromptMLM(mlm, 3, words).eval()
        out = model(ids, attention_mask=att, mask_pos=mask_pos, labels=torch.tensor([0, 2, 1]))
    torch.testing.assert_close(out.logits, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(full, torch.tensor([0, 2, 1])))


def test_decoder_is_untied_copy_unless_tie_emb(tiny_roberta_dir):
    mlm = AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir)
    emb = mlm.get_input_embeddings().weight
    model = PromptMLM(mlm, 2, [5, 6])
    assert model.decoder.weight is not emb and torch.equal(model.decoder.weight, emb)
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.decoder.weight" in names and "roberta.embeddings.word_embeddings.weight" in names
    assert "classifier.weight" in names
    tied = PromptMLM(AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir), 2, [5, 6], tie_emb=True)
    assert tied.decoder.weight is tied.roberta.embeddings.word_embeddings.weight


def test_regression_outputs_scores_and_kl_loss(tiny_roberta_dir):
    mlm = AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir).eval()
    model = PromptMLM(mlm, 1, [5, 6], output_mode="regression", regression_bounds=(0.0, 5.0)).eval()
    ids = torch.randint(5, 300, (2, 6))
    y = torch.tensor([1.0, 4.0])
    with torch.no_grad():
        out = model(ids, mask_pos=torch.tensor([1, 2]), labels=y)
        logits = mlm(input_ids=ids).logits[torch.arange(2), torch.tensor([1, 2])][:, [5, 6]]
    p = logits.softmax(-1)
    torch.testing.assert_close(out.logits, p[:, 1] * 5.0)
    t = torch.stack([1 - y / 5, y / 5], -1)
    torch.testing.assert_close(out.loss, (t * (t.log() - p.log())).sum(-1).mean())


def test_freezing_rules(tiny_roberta_dir):
    model = PromptMLM(AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir), 2, [5, 6])
    set_trainable(model, *_args())
    assert count_trainable(model) == sum(p.numel() for p in model.parameters())
    set_trainable(model, *_args(head_tuning=True))
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"lm_head"}


def test_unknown_head_is_a_usage_error():
    from transformers import DistilBertConfig, DistilBertForMaskedLM
    mlm = DistilBertForMaskedLM(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=20))
    with pytest.raises(UsageError, match="model type 'distilbert'"):
        PromptMLM(mlm, 2, [5, 6])


def test_unreachable_hub_name_fails_with_one_line(monkeypatch):
    from mezo.errors import ModelSourceError
    from mezo.models.prompt_mlm import load_tokenizer
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, no retries
    with pytest.raises(ModelSourceError) as e:
        load_tokenizer("no-such-org/no-such-model-xyz")
    msg = str(e.value)
    assert "\n" not in msg and "splade-tiny" in msg and "--model_name_or_path no-such-org/no-such-model-xyz" in msg


def test_demonstrations_get_enough_token_type_rows(tiny_bert_dir, tiny_roberta_dir):
    """prompt-demo on BERT: segments 2, 3, ... need rows; pretrained rows 0-1 are kept as they were."""
    from mezo.models.prompt_mlm import DEMO_SEGMENTS, enlarge_token_types
    mlm = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir).eval()
    old = mlm.bert.embeddings.token_type_embeddings.weight.detach().clone()
    enlarge_token_types(mlm)
    table = mlm.bert.embeddings.token_type_embeddings
    assert table.num_embeddings == DEMO_SEGMENTS == mlm.config.type_vocab_size
    assert torch.equal(table.weight[:old.shape[0]], old)
    ids = torch.randint(5, 300, (1, 8))
    segments = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3]])
    with torch.no_grad():
        mlm(input_ids=ids, token_type_ids=segments)   # no index error
    roberta = AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir)
    n = roberta.roberta.embeddings.token_type_embeddings.num_embeddings
    enlarge_token_types(roberta)
    assert roberta.roberta.embeddings.token_type_embeddings.num_embeddings == n
