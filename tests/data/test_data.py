"""Few-shot datasets, demonstrations, collation and logit averaging (docs/behaviour.md, "Demonstrations").

Tasks are small stand-ins with the mezo.data.tasks.Task API so these tests do not read files.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
import torch

from mezo.data.datasets import Collator, average_over_samples, build_dataset, example_sentences
from mezo.data.prompt import PromptSpec
from mezo.errors import UsageError
from mezo.data.templates import auto_demo_template, label_word_ids, render

SENT = "*cls**sent_0*_It_was*mask*.*sep+*"
NLI = "*cls**sent-_0*?*mask*,*+sentl_1**sep+*"


@dataclass
class Ex:
    guid: str
    text_a: str
    text_b: Optional[str] = None
    label: object = None


class FakeTask:
    def __init__(self, name, label_list, output_mode="classification", median=None):
        self.name = name
        self.label_list = label_list
        self.num_labels = 1 if output_mode == "regression" else len(label_list)
        self.output_mode = output_mode
        self.median = median
        self.regression_bounds = (0.0, 5.0) if output_mode == "regression" else None

    def label_id(self, label):
        return self.label_list.index(label)


SST2 = FakeTask("sst-2", ["0", "1"])
MNLI = FakeTask("mnli", ["contradiction", "entailment", "neutral"])
STSB = FakeTask("sts-b", [None], "regression", median=2.5)
NLI_LABELS = MNLI.label_list
WORDS = ["great", "terrible", "good", "bad", "okay", "correct", "incorrect", "Yes", "No"]


def sst2_examples(n, prefix="train"):
    return [Ex(f"{prefix}-{i}", f"{WORDS[i % len(WORDS)]} {i}", None, str(i % 2))
            for i in range(n)]


def nli_examples(n, prefix="train"):
    return [Ex(f"{prefix}-{i}", f"P{i}.", f"H{i}.", NLI_LABELS[i % 3]) for i in range(n)]


def build(split, queries, supports, tok, *, task, template=None, label_word_ids=None, prompt=True, demo=False,
          data_dir=None, seed=None, **rendering):
    """build_dataset with the PromptSpec these settings make (few_shot_type from prompt / demo)."""
    spec = PromptSpec(few_shot_type="prompt-demo" if demo else "prompt" if prompt else "finetune",
                      template=template, rendered_template=template,
                      label_word_ids=None if label_word_ids is None else tuple(label_word_ids), **rendering)
    return build_dataset(split, queries, supports, tok, task=task, spec=spec, data_dir=data_dir, seed=seed)


def nli_dataset(split, queries, supports, tok, **kw):
    lw = label_word_ids(tok, {"contradiction": "No", "entailment": "Yes", "neutral": "Maybe"},
                        NLI_LABELS)
    args = dict(task=MNLI, template=auto_demo_template(NLI, 3), label_word_ids=lw, prompt=True,
                demo=True, max_seq_length=256, num_sample=1, seed=0)
    args.update(kw)
    return build(split, queries, supports, tok, **args)


# ----------------------------------------------------------------------------- auto demo template

def test_auto_demo_template_sst2():
    assert auto_demo_template(SENT, 2) == (SENT + "*sent_1*_It_was*label_0*.*sep+*"
                                           + "*sent_2*_It_was*label_1*.*sep+*")


def test_auto_demo_template_nli():
    assert auto_demo_template(NLI, 3) == (
        NLI
        + "*sent-_2*?*label_0*,*+sentl_3**sep+*"
        + "*sent-_4*?*label_1*,*+sentl_5**sep+*"
        + "*sent-_6*?*label_2*,*+sentl_7**sep+*")


# ----------------------------------------------------------------------------- demo sampling

def test_one_demo_per_label_never_self_in_train(roberta_tokenizer):
    train = nli_examples(12)
    ds = nli_dataset("train", train, None, roberta_tokenizer)
    assert ds.num_sample == 1 and len(ds) == 12 and ds.num_queries == 12
    for _ in range(30):
        for q in range(12):
            picked = ds.select_demos(q)
            assert [MNLI.label_id(train[j].label) for j in picked] == [0, 1, 2]
            assert q not in picked


def test_query_itself_allowed_outside_train(roberta_tokenizer):
    train = nli_examples(3)  # exactly one example per label
    ds = nli_dataset("dev", train, train, roberta_tokenizer, num_sample=2)
    assert ds.select_demos(0) == [0, 1, 2]
    with pytest.raises(UsageError) as e:  # train: query 0 is the only contradiction
        nli_dataset("train", train, None, roberta_tokenizer)[0]
    assert str(e.value) == ("demonstrations: no candidate training example for label id(s) [0] "
                            "for train example 'train-0' (need >= 1 per label, >= 2 in train)")


def test_sentence_grouping_order(roberta_tokenizer):
    train = nli_examples(9)
    ds = nli_dataset("train", train, None, roberta_tokenizer, seed=3)
    rng = np.random.RandomState(3)
    for q in (0, 4, 8):
        sents = ds.sentences_for(q)
        # replay the permutation scan by hand
        cand = [j for j in range(9) if j != q]
        first = {}
        for k in rng.permutation(len(cand)):
            first.setdefault(MNLI.label_id(train[cand[k]].label), cand[k])
            if len(first) == 3:
                break
        expected = [f"P{q}.", f"H{q}."]
        for label in range(3):
            expected += [f"P{first[label]}.", f"H{first[label]}."]
        assert sents == expected


def test_train_item_renders_the_demo_template(roberta_tokenizer):
    tok = roberta_tokenizer
    train = nli_examples(9)
    a = nli_dataset("train", train, None, tok, seed=11)
    b = nli_dataset("train", train, None, tok, seed=11)
    item = a[2]
    expected = render(b.template, b.sentences_for(2), tok, b.label_word_ids, 256, guid="train-2")
    assert item == dict(expected, label=MNLI.label_id(train[2].label))
    assert item["input_ids"].count(tok.mask_token_id) == 1
    for w in ("No", "Yes", "Maybe"):  # every label word appears once, in a demo slot
        assert item["input_ids"].count(tok.convert_tokens_to_ids("Ġ" + w)) >= 1


def test_train_resamples_on_every_access(roberta_tokenizer):
    ds = nli_dataset("train", nli_examples(30), None, roberta_tokenizer, seed=0)
    seen = {tuple(ds[0]["input_ids"]) for _ in range(20)}
    assert len(seen) > 1
    assert ds.features is None


def test_dev_num_sample_copies_sample_major(roberta_tokenizer):
    tok = roberta_tokenizer
    train, dev = nli_examples(15), nli_examples(4, "dev")
    ds = nli_dataset("dev", dev, train, tok, num_sample=3, seed=7)
    assert ds.num_sample == 3 and ds.num_queries == 4 and len(ds) == 12
    rng = np.random.RandomState(7)
    for s in range(3):
        for q in range(4):
            first = {}
            for k in rng.permutation(15):
                first.setdefault(MNLI.label_id(train[k].label), k)
                if len(first) == 3:
                    break
            sents = [f"P{q}.", f"H{q}."]
            for label in range(3):
                sents += [f"P{first[label]}.", f"H{first[label]}."]
            want = render(ds.template, sents, tok, ds.label_word_ids, 256)
            item = ds[s * 4 + q]
            assert item["input_ids"] == want["input_ids"]
            assert item["label"] == q % 3
    # materialised once: repeated access is stable
    assert ds[5] == ds[5]
    assert len({tuple(ds[s * 4]["input_ids"]) for s in range(3)}) > 1


def test_global_rng_when_seed_is_none(roberta_tokenizer):
    train, dev = nli_examples(15), nli_examples(4, "dev")
    np.random.seed(123)
    a = nli_dataset("dev", dev, train, roberta_tokenizer, num_sample=2, seed=None)
    b = nli_dataset("dev", dev, train, roberta_tokenizer, num_sample=2, seed=123)
    assert [a[i] for i in range(8)] == [b[i] for i in range(8)]


def test_no_demo_num_sample_is_one(roberta_tokenizer):
    tok = roberta_tokenizer
    lw = label_word_ids(tok, {"0": "terrible", "1": "great"}, ["0", "1"])
    train, test = sst2_examples(6), sst2_examples(5, "test")
    for split, ex in (("train", train), ("test", test)):
        ds = build(split, ex, train, tok, task=SST2, template=SENT, label_word_ids=lw,
                           prompt=True, demo=False, max_seq_length=128, num_sample=16)
        assert ds.num_sample == 1 and len(ds) == len(ex)
        item = ds[1]
        assert item == dict(render(SENT, [ex[1].text_a], tok, lw), label=1)
    # demo dataset for train also has num_sample 1
    assert build("train", train, None, tok, task=SST2, template=auto_demo_template(SENT, 2),
                         label_word_ids=lw, demo=True, num_sample=16, seed=0).num_sample == 1


def test_double_demo_and_truncate_head(roberta_tokenizer):
    tok = roberta_tokenizer
    train = nli_examples(9)
    kw = dict(max_seq_length=10, seed=1)
    assert nli_dataset("dev", train[:3], train, tok, num_sample=1, **kw).max_length == 10
    dd = nli_dataset("dev", train[:3], train, tok, num_sample=1, double_demo=True, **kw)
    assert dd.max_length == 20 and all(len(dd[i]["input_ids"]) == 20 for i in range(3))
    th = nli_dataset("dev", train[:3], train, tok, num_sample=1, double_demo=True,
                     truncate_head=True, max_seq_length=40, seed=1)
    assert all(th[i]["input_ids"][-1] == tok.sep_token_id for i in range(3))
    # truncate_head is ignored without demonstrations
    lw = label_word_ids(tok, {"0": "terrible", "1": "great"}, ["0", "1"])
    nd = build("test", sst2_examples(2), None, tok, task=SST2,
                       template="*cls**mask**sent_0**sep*", label_word_ids=lw, demo=False,
                       max_seq_length=3, truncate_head=True, double_demo=True)
    assert nd[0]["input_ids"][:2] == [0, 4] and len(nd[0]["input_ids"]) == 3


def test_demo_filter(roberta_tokenizer, tmp_path):
    tok = roberta_tokenizer
    train = nli_examples(12)  # labels cycle c, e, n
    dev = nli_examples(2, "dev")
    rs = np.random.RandomState(0)
    sup = rs.randn(12, 5)
    qry = rs.randn(2, 5)
    np.save(tmp_path / "train_sbert.npy", sup)
    np.save(tmp_path / "dev_matched_sbert.npy", qry)  # MNLI dev -> dev_matched
    ds = nli_dataset("dev", dev, train, tok, num_sample=2, demo_filter=True,
                     demo_filter_rate=0.5, demo_filter_model="sbert", data_dir=str(tmp_path))
    for q in range(2):
        cos = (sup @ qry[q]) / np.linalg.norm(sup, axis=1) / np.linalg.norm(qry[q])
        limit = int(12 // 3 * 0.5)  # 2 per label
        kept = []
        for label in range(3):
            idx = [j for j in range(12) if j % 3 == label]
            kept += sorted(idx, key=lambda j: -cos[j])[:limit]
        assert sorted(ds.candidates[q]) == sorted(kept)
        assert list(ds.candidates[q]) == sorted(kept, key=lambda j: -cos[j])
        for _ in range(5):
            assert set(ds.select_demos(q)) <= set(kept)
    with pytest.raises(UsageError, match=r"--demo_filter_model nope: missing embedding file"):
        nli_dataset("dev", dev, train, tok, demo_filter=True, demo_filter_model="nope",
                    data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- regression

def test_regression_labels_and_buckets(roberta_tokenizer):
    tok = roberta_tokenizer
    lw = label_word_ids(tok, {"0": "No", "1": "Yes"}, [None], "regression")
    scores = [0.0, 2.5, 2.6, 5.0, 1.0, 4.0]
    train = [Ex(f"train-{i}", f"P{i}.", f"H{i}.", str(s)) for i, s in enumerate(scores)]
    ds = build("train", train, None, tok, task=STSB, template=auto_demo_template(NLI, 2),
                       label_word_ids=lw, demo=True, max_seq_length=256, seed=0)
    assert ds.support_buckets == [0, 0, 1, 1, 0, 1]  # <= median (2.5) vs > median
    for q in range(6):
        lo, hi = ds.select_demos(q)
        assert float(train[lo].label) <= 2.5 < float(train[hi].label) and q not in (lo, hi)
    item = ds[2]
    assert isinstance(item["label"], float) and item["label"] == 2.6
    batch = Collator(tok.pad_token_id)([ds[0], ds[3]])
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [0.0, 5.0]


# ----------------------------------------------------------------------------- finetune / misc

def test_finetune_dataset(roberta_tokenizer, bert_tokenizer):
    ex = [Ex("t-0", "The cat sat.", "A cat is sitting.", "entailment")]
    ds = build("test", ex, None, bert_tokenizer, task=MNLI, prompt=False, demo=False,
                       max_seq_length=128)
    item = ds[0]
    assert "mask_pos" not in item and item["label"] == 1
    assert item["token_type_ids"][0] == 0 and item["token_type_ids"][-1] == 1
    with pytest.raises(UsageError, match="--few_shot_type"):   # demonstrations need a prompt
        PromptSpec(few_shot_type="finetune-demo")


def test_example_sentences():
    assert example_sentences(Ex("a", "x")) == ["x"]
    assert example_sentences(Ex("a", "x", "y")) == ["x", "y"]
    assert example_sentences(Ex("a", None)) == [""]
    assert example_sentences(Ex("a", float("nan"))) == [""]


def test_dataset_rejects_bad_template(roberta_tokenizer):
    with pytest.raises(UsageError, match="no \\*mask\\*"):
        build("dev", sst2_examples(2), None, roberta_tokenizer, task=SST2,
                      template="*cls**sent_0*", label_word_ids=[1, 2])
    with pytest.raises(UsageError, match="--template: required"):
        build("dev", sst2_examples(2), None, roberta_tokenizer, task=SST2,
                      template=None, label_word_ids=[1, 2])


def test_unlabelled_examples_have_no_label(roberta_tokenizer):
    ds = build("test", [Ex("t", "a b")], None, roberta_tokenizer, task=SST2,
                       template=SENT, label_word_ids=[1, 2])
    assert "label" not in ds[0]
    assert "labels" not in Collator(1)([ds[0]])


# ----------------------------------------------------------------------------- collator

def test_collator_padding_and_dtypes():
    feats = [
        {"input_ids": [0, 5, 4, 2], "attention_mask": [1] * 4, "token_type_ids": [0, 0, 1, 1],
         "mask_pos": 2, "label": 1},
        {"input_ids": [0, 4], "attention_mask": [1, 1], "token_type_ids": [0, 0],
         "mask_pos": 1, "label": 0},
    ]
    b = Collator(pad_token_id=1, pad_token_type_id=0)(feats)
    assert set(b) == {"input_ids", "attention_mask", "token_type_ids", "mask_pos", "labels"}
    assert b["input_ids"].tolist() == [[0, 5, 4, 2], [0, 4, 1, 1]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert b["token_type_ids"].tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]
    assert b["mask_pos"].tolist() == [2, 1] and b["mask_pos"].shape == (2,)
    assert b["labels"].tolist() == [1, 0]
    for k in ("input_ids", "attention_mask", "token_type_ids", "mask_pos", "labels"):
        assert b[k].dtype == torch.long
    assert feats[1]["input_ids"] == [0, 4]  # inputs not mutated

    b = Collator(pad_token_id=0)([{"input_ids": [101, 102], "attention_mask": [1, 1]},
                                  {"input_ids": [101, 7, 8, 102], "attention_mask": [1] * 4}])
    assert set(b) == {"input_ids", "attention_mask"}
    assert b["input_ids"].tolist() == [[101, 102, 0, 0], [101, 7, 8, 102]]


def test_collator_on_dataset(roberta_tokenizer):
    tok = roberta_tokenizer
    lw = label_word_ids(tok, {"0": "terrible", "1": "great"}, ["0", "1"])
    ex = [Ex("a", "great"), Ex("b", "The cat sat. The cat sat.")]
    for e, lab in zip(ex, "01"):
        e.label = lab
    ds = build("test", ex, None, tok, task=SST2, template=SENT, label_word_ids=lw)
    b = Collator(tok.pad_token_id)([ds[0], ds[1]])
    n0, n1 = len(ds[0]["input_ids"]), len(ds[1]["input_ids"])
    assert b["input_ids"].shape == (2, max(n0, n1)) and n0 < n1
    assert b["input_ids"][0, n0:].tolist() == [1] * (n1 - n0)
    assert b["attention_mask"].sum(1).tolist() == [n0, n1]
    assert b["mask_pos"].tolist() == [ds[0]["mask_pos"], ds[1]["mask_pos"]]
    assert (b["input_ids"][torch.arange(2), b["mask_pos"]] == tok.mask_token_id).all()
    assert "token_type_ids" not in b


# ----------------------------------------------------------------------------- averaging

def test_average_over_samples_hand_example():
    # num_sample = 2, N = 3 queries, 2 logits; sample-major rows
    logits = np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0],
                       [3.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    labels = np.array([0, 1, 1, 0, 1, 1])
    avg, lab = average_over_samples(logits, labels, 2)
    assert avg.tolist() == [[2.0, 1.0], [1.0, 1.0], [2.0, 3.0]]
    assert lab.tolist() == [0, 1, 1]
    avg1, lab1 = average_over_samples(logits, labels, 1)
    assert (avg1 == logits).all() and (lab1 == labels).all()
    r, rl = average_over_samples(np.array([1.0, 2.0, 3.0, 5.0]), np.array([.5, 1., .5, 1.]), 2)
    assert r.tolist() == [2.0, 3.5] and rl.tolist() == [0.5, 1.0]


def test_average_over_samples_errors():
    with pytest.raises(ValueError, match="labels differ between sample copies \\(query 1\\)"):
        average_over_samples(np.zeros((4, 2)), np.array([0, 1, 0, 0]), 2)
    with pytest.raises(ValueError, match="num_sample=2"):
        average_over_samples(np.zeros((3, 2)), np.zeros(3), 2)
