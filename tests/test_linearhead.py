"""Linear probing (`--trainer linearhead`, `--from_linearhead`): the probe, the write-back, run.py."""
import copy
import json
import types

import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

import tiny

import run
from src.arguments import MezoTrainingArguments
from src.data import Collator
from src.linearhead import collect_features, fit_linear_head, fit_probe
from src.models import PromptMLM
from src.tasks import get_task
from src.trainer import MezoTrainer

WORDS = [10, 20, 30]


pytestmark = pytest.mark.usefixtures("one_thread")


def _toy(n=24, num_labels=2, seed=0, mask=True):
    """Label = the marker token at the position the probe reads (the mask position for the prompt
    model, position 0 for the sequence classifier): separable even for a random tiny model."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        label = i % num_labels
        ids = torch.randint(40, 300, (7,), generator=g).tolist()
        pos = 1 if mask else 0
        ids[pos] = (100, 150, 200)[label]
        item = {"input_ids": ids, "attention_mask": [1] * 7, "label": label}
        if mask:
            item["mask_pos"] = pos
        items.append(item)
    return items


def _trainer(tmp_path, model):
    args = MezoTrainingArguments(output_dir=str(tmp_path / "out"), per_device_eval_batch_size=8, use_cpu=True,
                                 report_to="none", disable_tqdm=True)
    return MezoTrainer(model=model, args=args, data_collator=Collator(1), dev_objective=lambda m: 0)


def _largs(prob=False, early=True):
    return types.SimpleNamespace(prob_as_feature=prob, lp_early_stopping=early)


@torch.no_grad()
def _logits(model, data):
    model.eval()
    batch = Collator(1)(data)
    batch.pop("labels")
    return model(**batch).logits


def test_fit_probe_binary_rows_and_multiclass():
    rs = np.random.RandomState(0)
    X = rs.randn(60, 6)
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.3 * rs.randn(60) > 0).astype(int)   # noisy: lbfgs converges fast
    W, b, info = fit_probe(X, y, 2, early_stopping=True)
    assert W.shape == (2, 6) and np.allclose(W[0], -W[1]) and np.isclose(b[0], -b[1])
    pred = (X @ W.T + b).argmax(1)
    assert (pred == y).mean() == info["lp_train_acc"] > 0.85
    y3 = np.arange(60) % 3
    X3 = X + 3 * np.eye(6)[y3]
    W3, b3, info3 = fit_probe(X3, y3, 3, early_stopping=True)
    assert W3.shape == (3, 6) and ((X3 @ W3.T + b3).argmax(1) == y3).mean() == info3["lp_train_acc"] > 0.9
    Wr, br, _ = fit_probe(X, X @ np.arange(6.0) + 1.5, 1, regression=True)
    assert np.allclose(Wr, np.arange(6.0)[None]) and np.allclose(br, [1.5])


@pytest.mark.parametrize("num_labels", [2, 3])
def test_prompt_probe_writes_label_word_rows(tmp_path, tiny_roberta_dir, num_labels):
    torch.manual_seed(0)
    model = PromptMLM(AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir), num_labels, WORDS[:num_labels])
    data = _toy(n=num_labels * 12, num_labels=num_labels)
    trainer = _trainer(tmp_path, model)
    weight0 = model.decoder.weight.detach().clone()
    bias0 = model.decoder.bias.detach().clone()
    X, y = collect_features(trainer, model, data)
    info = fit_linear_head(trainer, model, data, get_task("sst-5" if num_labels == 3 else "SST-2"), _largs())
    W, b, _ = fit_probe(X, y, num_labels, early_stopping=True)
    rows = WORDS[:num_labels]
    torch.testing.assert_close(model.decoder.weight[rows].double(), torch.as_tensor(W), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.decoder.bias[rows].double(), torch.as_tensor(b), atol=1e-6, rtol=1e-5)
    others = [i for i in range(weight0.shape[0]) if i not in rows]
    assert torch.equal(model.decoder.weight[others], weight0[others])
    assert torch.equal(model.decoder.bias[others], bias0[others])   # the shared bias: label words only
    logits = _logits(model, data)
    torch.testing.assert_close(logits.double(), torch.as_tensor(X @ W.T + b), atol=1e-4, rtol=1e-4)
    assert (logits.argmax(-1) == torch.as_tensor(y)).all() and info["lp_train_acc"] == 1.0


def test_prob_as_feature_folds_into_rows(tmp_path, tiny_roberta_dir):
    torch.manual_seed(0)
    model = PromptMLM(AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir), 2, WORDS[:2])
    data = _toy()
    old = _logits(model, data).double()
    F = (old - old.mean(-1, keepdim=True)).numpy()   # centred log-probabilities
    y = np.array([d["label"] for d in data])
    W, b, _ = fit_probe(F, y, 2, early_stopping=True)
    fit_linear_head(_trainer(tmp_path, model), model, data, get_task("SST-2"), _largs(prob=True))
    torch.testing.assert_close(_logits(model, data).double(), torch.as_tensor(F @ W.T + b), atol=1e-4, rtol=1e-4)


def test_finetune_model_probe(tmp_path, tiny_bert_dir):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    data = _toy(mask=False)
    before = copy.deepcopy(model.classifier.weight.detach())
    info = fit_linear_head(_trainer(tmp_path, model), model, data, get_task("SST-2"), _largs())
    assert not torch.equal(model.classifier.weight, before)
    y = torch.tensor([d["label"] for d in data])
    assert (_logits(model, data).argmax(-1) == y).all() and info["lp_train_acc"] == 1.0


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, repo_root):
    return tiny.small_uci_split(tmp_path_factory.mktemp("data") / "uci-sentiment" / "16-42", 40)


def _argv(data_dir, out, log, *extra):
    # what run_fewshot.sh passes (incl. --evaluate_during_training), on the embedded model
    return ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", data_dir,
            "--few_shot_type", "prompt", "--template", "*cls**sent_0*_It_was*mask*.*sep+*",
            "--mapping", "{0:'terrible',1:'great'}", "--output_dir", str(out), "--log_file", str(log),
            "--do_train", "--do_eval", "--do_predict", "--evaluate_during_training", "--eval_steps", "2",
            "--per_device_eval_batch_size", "64", "--per_device_train_batch_size", "16", "--seed", "42",
            "--disable_tqdm", "true", "--overwrite_output_dir", *extra]


def test_run_linearhead_and_lp_ft(tmp_path, small_data):
    log = tmp_path / "log"
    assert run.main(_argv(small_data, tmp_path / "lp", log, "--trainer", "linearhead", "--max_steps", "1000",
                          "--lp_early_stopping")) == 0
    assert run.main(_argv(small_data, tmp_path / "lpft", log, "--from_linearhead", "--max_steps", "2",
                          "--zero_order_optim", "--efficient_zero_order", "--learning_rate", "1e-5",
                          "--optimizer", "sgd", "--lr_scheduler_type", "constant", "--lp_early_stopping")) == 0
    lp, lpft = [json.loads(line) for line in log.read_text().splitlines()]
    assert lp["lp_train_acc"] > 0.9 and "global_step" not in lp and lp["trainer"] == "linearhead"
    assert lp["uci-sentiment_test_eval_acc"] > 0.5
    assert lpft["lp_train_acc"] > 0.9 and lpft["global_step"] == 2
