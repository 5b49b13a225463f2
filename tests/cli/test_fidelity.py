"""Numbers equal to the original's on paths where they used to differ (issue: faithful numbers).

Each expectation is a literal re-statement of the original's rule (docs/behaviour.md: "Demonstrations",
"The MeZO step", "Training loop and model selection"), computed here without the project's code path.
"""
import math

import numpy as np
import pytest
import torch

import tiny

from mezo.cli import run
from mezo.data import datasets as data
from mezo.zo import methods as zo   # the optimizers call mezo_step from here
from mezo.config.arguments import parse_args
from mezo.data.prompt import PromptSpec
from mezo.data.tasks import get_task
from mezo.training.callbacks import BestDevCallback

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", "d",
        "--output_dir", "/tmp/unused"]


def _model(path):
    return tiny.prompt_model(path, dropout=0.0)


def _trainer(tmp_path, model, **kw):
    return tiny.trainer(tmp_path, model, zo=False, eval_dataset=tiny.mask_dataset(4, 1),
                        compute_metrics=lambda p: {"acc": 0.5}, dev_objective=lambda m: m["eval_acc"], **kw)


# ------------------------------------------------------------------ item 1: the MeZO learning rate
@pytest.mark.parametrize("extra, want", [
    ([], "linear"),                                                    # Adam FT: the Trainer's default
    (["--zero_order_optim"], "constant"),                              # direct MeZO: the original's constant lr
    (["--zero_order_optim", "--zero_order_use_trainer_optim"], "linear"),
    (["--zero_order_optim", "--lr_scheduler_type", "linear"], "linear"),  # explicit: honoured
    (["--lr_scheduler_type", "cosine"], "cosine"),
])
def test_default_scheduler(extra, want):
    _, _, t, _ = parse_args(BASE + extra)
    assert str(t.lr_scheduler_type.value) == want


@pytest.mark.parametrize("explicit", [None, "linear"])
def test_direct_mezo_learning_rate(tmp_path, tiny_roberta_dir, monkeypatch, explicit):
    """Unset: every step uses --learning_rate as is; an explicit linear schedule decays it."""
    seen = []
    real = zo.mezo_step

    def spy(*a, **k):
        assert len(set(k["lr"])) == 1   # one param group's lr for every parameter
        seen.append(k["lr"][0])
        return real(*a, **k)
    monkeypatch.setattr(zo, "mezo_step", spy)
    kw = dict(zero_order_optim=True, efficient_zero_order=True, optimizer="sgd")
    if explicit:
        kw["lr_scheduler_type"] = explicit
    _trainer(tmp_path, _model(tiny_roberta_dir), **kw).train()
    lr, n = 1e-3, 3
    want = [lr] * n if explicit is None else [lr * (n - k) / n for k in range(n)]
    assert seen == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------ item 3: one demonstration stream
def test_test_demos_continue_the_dev_stream(tmp_path, bert_tokenizer, monkeypatch):
    split = tiny.small_uci_split(tmp_path / "d", test_rows=6)
    argv = BASE[:4] + ["--data_dir", split, "--output_dir", str(tmp_path / "o"), "--few_shot_type", "prompt-demo",
                       "--template", "*cls**sent_0*_It_was*mask*.*sep+*", "--mapping", "{0:'terrible',1:'great'}",
                       "--num_sample", "2", "--seed", "13", "--do_eval", "--do_predict"]
    model_args, data_args, training_args, _ = parse_args(argv)
    task = get_task("uci-sentiment")
    chosen = {"dev": [], "test": []}
    real = data.FewShotDataset.select_demos

    def spy(self, q):
        out = real(self, q)
        chosen[self.split].append(out)
        return out
    monkeypatch.setattr(data.FewShotDataset, "select_demos", spy)
    spec = PromptSpec.from_args(model_args, data_args, task)
    run.build_data(spec, data_args, training_args, task, bert_tokenizer)

    # The original: NumPy's global stream seeded with --seed once; dev (sample-major) then test.
    train = task.read_examples(split, "train")
    labels = [task.label_id(e.label) for e in train]
    rs = np.random.RandomState(13)

    def draw():
        picked = {}
        for i in rs.permutation(len(train)):
            picked.setdefault(labels[i], int(i))
            if len(picked) == 2:
                break
        return [picked[0], picked[1]]
    for name in ("dev", "test"):
        n = len(task.read_examples(split, name))
        assert chosen[name] == [draw() for _ in range(2 * n)]


# ------------------------------------------------------------------ item 5: NaN dev scores
def test_nan_dev_score_is_never_kept():
    model = torch.nn.Linear(2, 1)
    cb = BestDevCallback(lambda m: m["acc"])
    cb.on_train_begin(None, None, None)
    state = type("S", (), {})()
    for step, score in enumerate([float("nan"), -math.inf, 0.4, float("nan"), 0.3], 1):
        state.global_step = step
        cb.on_evaluate(None, state, None, metrics={"acc": score}, model=model)
    assert cb.best_step == 3 and cb.best_score == 0.4
    only_nan = BestDevCallback(lambda m: m["acc"])
    only_nan.on_train_begin(None, None, None)
    only_nan.on_evaluate(None, state, None, metrics={"acc": float("nan")}, model=model)
    assert only_nan.best_step is None and not only_nan.restore(model)


# ------------------------------------------------------------------ item 6: --max_zo_forward_steps
@pytest.mark.parametrize("eval_steps", [1, 3])
def test_forward_limit_stops_before_evaluating(tmp_path, tiny_roberta_dir, eval_steps):
    limit = 5
    t = _trainer(tmp_path, _model(tiny_roberta_dir), zero_order_optim=True, efficient_zero_order=True,
                 optimizer="sgd", max_steps=10, max_zo_forward_steps=limit, evaluate_during_training=True,
                 eval_steps=eval_steps)
    t.train()
    # The original, after step k (2 forwards each): stop if forwards > limit, else evaluate if k % eval_steps == 0.
    evaluated, k = [], 0
    while True:
        k += 1
        if 2 * k > limit:
            break
        if k % eval_steps == 0:
            evaluated.append(k)
    assert t.state.global_step == k
    assert [s for s, _ in t.best.curve] == evaluated


# ------------------------------------------------------------------ item 7: weight-decay groups
def test_weight_decay_groups_are_the_originals(tmp_path, tiny_roberta_dir):
    model = _model(tiny_roberta_dir)
    opt = _trainer(tmp_path, model, weight_decay=0.1).create_optimizer()
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    want = {n for n, p in model.named_parameters() if "bias" not in n and "LayerNorm.weight" not in n}
    assert names == want
    assert "lm_head.layer_norm.weight" in names   # case-sensitive in the original: decayed
    assert "roberta.embeddings.LayerNorm.weight" not in names


# ------------------------------------------------------------------ the original's AdamW (FT rows)
def test_original_adamw_against_the_rule_in_float64():
    """transformers-4 AdamW: eps added to sqrt(v) before the bias correction (folded into the step
    size); decoupled decay applied after the update. torch's AdamW gives other numbers."""
    from mezo.training.original_adamw import OriginalAdamW
    rng = np.random.RandomState(0)
    theta0 = rng.randn(5)
    grads = [rng.randn(5) * s for s in (1e-7, 1.0, 1e-3)]   # tiny gradients: where eps placement matters
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.999, 1e-8, 0.01
    th, m, v = theta0.copy(), np.zeros(5), np.zeros(5)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        th = th - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
        th = th - lr * wd * th
    finals = {}
    for name, cls in (("original", OriginalAdamW), ("torch", torch.optim.AdamW)):
        p = torch.nn.Parameter(torch.tensor(theta0))
        opt = cls([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
        for g in grads:
            p.grad = torch.tensor(g)
            opt.step()
        finals[name] = p.detach().numpy()
    np.testing.assert_allclose(finals["original"], th, rtol=1e-13, atol=0)
    assert np.abs(finals["torch"] - th).max() > 1e-6


@pytest.mark.parametrize("torch_adamw", [False, True])
def test_adam_choice(tmp_path, tiny_roberta_dir, torch_adamw):
    from mezo.training.original_adamw import OriginalAdamW
    opt = _trainer(tmp_path, _model(tiny_roberta_dir), torch_adamw=torch_adamw).create_optimizer()
    assert type(opt) is (torch.optim.AdamW if torch_adamw else OriginalAdamW)


# ------------------------------------------------------------------ the original's data order
def _recording(trainer, dataset):
    """Wrap training_step: record each batch as the dataset indices of its rows."""
    index = {tuple(item["input_ids"][:5]): i for i, item in enumerate(dataset)}
    seen, real = [], trainer.training_step

    def spy(model, inputs, *a, **k):
        seen.append([index[tuple(row[:5])] for row in inputs["input_ids"].tolist()])
        return real(model, inputs, *a, **k)
    trainer.training_step = spy
    return seen


def _order_trainer(tmp_path, model, **kw):
    t = _trainer(tmp_path, model, per_device_train_batch_size=5, max_steps=8, seed=11, **kw)
    return t, _recording(t, tiny.mask_dataset())


@pytest.mark.parametrize("zo_on", [False, True])
def test_data_order_is_the_originals(tmp_path, tiny_roberta_dir, zo_on):
    """transformers 4.28 (the original): right after the Trainer seeds torch with --seed, one int64 is
    drawn from the global RNG to seed the sampler's generator; every epoch is torch.randperm(n) from
    it, plus the extra draw RandomSampler makes for the n % n remainder."""
    kw = dict(zero_order_optim=True, efficient_zero_order=True, optimizer="sgd") if zo_on else {}
    t, seen = _order_trainer(tmp_path, _model(tiny_roberta_dir), **kw)
    t.train()
    torch.manual_seed(11)
    g = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
    n, bs, want = 12, 5, []
    while len(want) < 8:
        perm = torch.randperm(n, generator=g).tolist()
        torch.randperm(n, generator=g)
        want += [perm[i:i + bs] for i in range(0, n, bs)]
    assert seen == want[:8]


@pytest.mark.parametrize("resume_at", [4, 6])   # mid-epoch, and an epoch's last step (3 steps per epoch)
def test_resumed_run_sees_the_same_batches(tmp_path, tiny_roberta_dir, resume_at):
    t, full = _order_trainer(tmp_path / "a", _model(tiny_roberta_dir), save_steps=1, save_total_limit=20)
    t.train()
    ckpt = str(tmp_path / "a" / "out" / f"checkpoint-{resume_at}")
    t2, resumed = _order_trainer(tmp_path / "a", _model(tiny_roberta_dir), save_steps=1, save_total_limit=20)
    t2.train(resume_from_checkpoint=ckpt)
    assert resumed == full[resume_at:]


def test_data_seed_seeds_the_sampler(tmp_path, tiny_roberta_dir):
    """transformers 4.28: --data_seed, when given, seeds the sampler's generator instead of the draw."""
    t, seen = _order_trainer(tmp_path, _model(tiny_roberta_dir), data_seed=5)
    t.train()
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(12, generator=g).tolist()
    assert seen[:2] == [perm[0:5], perm[5:10]]
