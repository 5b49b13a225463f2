"""Linear probing (`--trainer linearhead`, `--from_linearhead`): the probe, the write-back, run.py."""
import copy
import json
import types

import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

import tiny

from mezo.cli import run
from mezo.config.arguments import MezoTrainingArguments
from mezo.data.datasets import Collator
from mezo.errors import UsageError
from mezo.training.linearhead import (LP_CS, collect_features, fit_linear_head, fit_probe, multinomial_logistic_cv,
                            original_train_order)
from mezo.models.prompt_mlm import PromptMLM
from mezo.data.tasks import get_task
from mezo.training.trainer import MezoTrainer

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


def _literal_order(seed, n, bs=8, drop_last=False):
    """The reference's LP feature order, stated literally: transformers 4.28 seeded the global torch
    RNG with --seed (Trainer.__init__), drew one int64 to seed the RandomSampler's generator, whose
    one pass is randperm(n); the loader cut it into batches of bs (the last one kept)."""
    torch.manual_seed(seed)
    sampler_seed = int(torch.empty((), dtype=torch.int64).random_().item())
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(sampler_seed)).tolist()
    batches = [perm[i:i + bs] for i in range(0, n, bs)]
    if drop_last and len(batches[-1]) < bs:
        batches.pop()
    return [i for b in batches for i in b]


@pytest.mark.parametrize("bs,drop_last", [(1, False), (3, False), (8, False), (64, False), (8, True)])
def test_original_train_order_is_the_4_28_sampler(bs, drop_last):
    args = types.SimpleNamespace(train_batch_size=bs, world_size=1, data_seed=None, seed=13,
                                 dataloader_drop_last=drop_last)
    want = _literal_order(13, 30, bs, drop_last)
    after_two = [torch.empty((), dtype=torch.int64).random_().item() for _ in range(3)]  # draws 2..4
    torch.manual_seed(13)
    got = original_train_order(30, args)
    assert got == want and (drop_last or sorted(got) == list(range(30)))
    # the sampler seed and the loader's base seed were drawn, as in the reference: the next draw is the 3rd
    assert torch.empty((), dtype=torch.int64).random_().item() == after_two[1]
    torch.manual_seed(14)
    assert original_train_order(30, args) != want          # a function of the seed


def test_original_train_order_data_seed_and_distributed():
    args = types.SimpleNamespace(train_batch_size=4, world_size=1, data_seed=7, seed=13, dataloader_drop_last=False)
    torch.manual_seed(0)
    assert original_train_order(10, args) == torch.randperm(10, generator=torch.Generator().manual_seed(7)).tolist()
    # 3 processes, DistributedSampler(seed=13): randperm padded to a multiple of 3 by its head, rank r
    # takes every 3rd from r; the reference gathered the ranks' features in rank order
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(13)).tolist()
    padded = perm + perm[:2]
    args = types.SimpleNamespace(train_batch_size=4, world_size=3, data_seed=None, seed=13, dataloader_drop_last=False)
    assert original_train_order(10, args) == padded[0::3] + padded[1::3] + padded[2::3]


def _literal_softmax_fit(X, y, K, C):
    """argmin_W,b  C * sum_i -log softmax(W x_i + b)[y_i] + ||W||^2 / 2 (scikit-learn's documented
    objective), by autograd + L-BFGS to a tight tolerance: an implementation independent of the probe's."""
    from scipy.optimize import minimize

    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)

    def f(theta):
        t = torch.as_tensor(theta).requires_grad_()
        W, b = t[:K * X.shape[1]].view(K, -1), t[K * X.shape[1]:]
        loss = C * torch.nn.functional.cross_entropy(Xt @ W.T + b, yt, reduction="sum") + 0.5 * (W * W).sum()
        loss.backward()
        return loss.item(), t.grad.numpy().copy()
    res = minimize(f, np.zeros(K * (X.shape[1] + 1)), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-11, "ftol": 1e-16, "maxiter": 100000, "maxcor": 30})
    return res.x[:K * X.shape[1]].reshape(K, -1), res.x[K * X.shape[1]:]


def _noisy(seed, n=40, K=2):
    rs = np.random.RandomState(seed)
    y = np.arange(n) % K
    return rs.randn(n, 3) + 0.5 * np.eye(3)[y] @ np.array([[1, 0.5, 0], [-1, 0, 0.5], [0, -1, 1]]), y


def _literal_objective(X, y, C, W, b):
    Z = torch.as_tensor(X) @ torch.as_tensor(W).T + torch.as_tensor(b)
    return (C * torch.nn.functional.cross_entropy(Z, torch.as_tensor(y), reduction="sum")
            + 0.5 * (torch.as_tensor(W) ** 2).sum()).item()


@pytest.mark.parametrize("K", [2, 3])
def test_softmax_fit_is_the_literal_multinomial_objective(K):
    X, y = _noisy(3, K=K)
    for C in (0.05, 3.0):
        W, b, C_sel, _ = multinomial_logistic_cv(X, y, K, tol=1e-10, max_iter=100000, Cs=[C])
        Wl, bl = _literal_softmax_fit(X, y, K, C)
        assert C_sel == C and W.shape == (K, 3)
        # the reference's L-BFGS-B also stops on its default relative decrease (ftol 2.2e-9): the
        # same minimum up to that, not to the last digit
        f, fl = _literal_objective(X, y, C, W, b), _literal_objective(X, y, C, Wl, bl)
        assert fl <= f <= fl * (1 + 1e-8)
        scale = np.abs(Wl).max()
        np.testing.assert_allclose(W, Wl, rtol=0, atol=1e-3 * scale)
        np.testing.assert_allclose(b - b.mean(), bl - bl.mean(), rtol=0, atol=1e-3 * scale)
        if K == 2:   # two rows: the binomial fit at 2C, split in halves - not the binomial fit at C
            from sklearn.linear_model import LogisticRegression
            assert np.allclose(W[0], -W[1]) and np.isclose(b[0], -b[1])
            for C2, same in ((2 * C, True), (C, False)):
                u = LogisticRegression(C=C2, tol=1e-12, max_iter=100000).fit(X, y)
                close = (np.allclose(W[1], u.coef_[0] / 2, rtol=0, atol=1e-3 * scale)
                         and np.isclose(b[1], u.intercept_[0] / 2, rtol=0, atol=1e-3 * scale))
                assert close == same


def test_cv_selects_c_by_the_literal_rule():
    """5 stratified folds of the collected order, the C grid logspace(-4, 4, 10), accuracy summed over
    folds, the first maximum - with every fit taken from the literal objective."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    X, y = _noisy(6)
    Cs = np.logspace(-4, 4, 10)
    assert np.array_equal(LP_CS, Cs)
    acc = np.zeros((5, 10))
    for f, (tr, te) in enumerate(StratifiedKFold(5).split(X, y)):
        for i, C in enumerate(Cs):
            W, b = _literal_softmax_fit(X[tr], y[tr], 2, C)
            acc[f, i] = np.mean((X[te] @ W.T + b).argmax(1) == y[te])
    want = Cs[int(np.argmax(acc.sum(0)))]
    W, b, C, scores = multinomial_logistic_cv(X, y, 2, tol=1e-10, max_iter=100000)
    # (at C = 1e-4 the fits are ~0 and a held-out prediction can hang on the solver's last digits, in
    # the reference too; on these data no prediction does)
    np.testing.assert_array_equal(scores, acc.mean(0))
    assert C == want
    Wl, bl = _literal_softmax_fit(X, y, 2, want)
    np.testing.assert_allclose(W, Wl, rtol=0, atol=1e-3 * np.abs(Wl).max())
    # the reference's own tolerance picks the same C here, and the probe reports it
    W4, b4, info = fit_probe(X, y, 2)
    assert info["lp_C"] == want and np.allclose(W4, Wl, rtol=0, atol=1e-2 * np.abs(Wl).max())
    # scikit-learn 1.9's binomial fit of the same grid would have picked another C on these data
    binom = LogisticRegressionCV(Cs=Cs, cv=5, tol=1e-10, max_iter=100000, l1_ratios=(0.0,), scoring="accuracy",
                                 use_legacy_attributes=False).fit(X, y)
    assert binom.C_ != want


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
    perm = _literal_order(trainer.args.seed, len(data), trainer.args.train_batch_size)
    X, y = collect_features(trainer, model, data, order=perm, batch_size=trainer.args.train_batch_size)
    assert y.tolist() == [data[i]["label"] for i in perm]
    torch.manual_seed(trainer.args.seed)   # as the Trainer left it
    info = fit_linear_head(trainer, model, data, get_task("sst-5" if num_labels == 3 else "SST-2"), _largs())
    W, b, _ = fit_probe(X, y, num_labels, early_stopping=True)
    rows = WORDS[:num_labels]
    torch.testing.assert_close(model.decoder.weight[rows].double(), torch.as_tensor(W), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.decoder.bias[rows].double(), torch.as_tensor(b), atol=1e-6, rtol=1e-5)
    others = [i for i in range(weight0.shape[0]) if i not in rows]
    assert torch.equal(model.decoder.weight[others], weight0[others])
    assert torch.equal(model.decoder.bias[others], bias0[others])   # the shared bias: label words only
    logits = _logits(model, data)[perm]
    torch.testing.assert_close(logits.double(), torch.as_tensor(X @ W.T + b), atol=1e-4, rtol=1e-4)
    assert (logits.argmax(-1) == torch.as_tensor(y)).all() and info["lp_train_acc"] == 1.0


def test_fit_linear_head_reads_features_in_the_reference_loader_order(tmp_path, tiny_roberta_dir, monkeypatch):
    import mezo.training.linearhead as lh

    seen = {}
    real = lh.collect_features

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)
    monkeypatch.setattr(lh, "collect_features", spy)
    torch.manual_seed(0)
    model = PromptMLM(AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir), 2, WORDS[:2])
    data = _toy(n=21)
    trainer = _trainer(tmp_path, model)   # the Trainer seeds the global RNG with --seed (42), as in 4.28
    trainer.args.per_device_train_batch_size = 4
    fit_linear_head(trainer, model, data, get_task("SST-2"), _largs())
    assert seen["batch_size"] == 4 and seen["order"] == _literal_order(42, 21, 4)
    trainer.args.per_device_train_batch_size, trainer.args.dataloader_drop_last = 32, True
    with pytest.raises(UsageError, match="--dataloader_drop_last"):   # 21 < 32: nothing left to fit on
        fit_linear_head(trainer, model, data, get_task("SST-2"), _largs())


def test_prob_as_feature_folds_into_rows(tmp_path, tiny_roberta_dir):
    torch.manual_seed(0)
    model = PromptMLM(AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir), 2, WORDS[:2])
    data = _toy()
    old = _logits(model, data).double()
    F = (old - old.mean(-1, keepdim=True)).numpy()   # centred log-probabilities
    y = np.array([d["label"] for d in data])
    perm = _literal_order(42, len(data))
    W, b, _ = fit_probe(F[perm], y[perm], 2, early_stopping=True)
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
