"""MeZO ablations: the trainer-optimizer path, n-SPSA, block variants, ZO-by-layer, layer-wise
selection, the accuracy objective, the forward-count stop, and the flag checks (mezo.zo.ablations)."""
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForMaskedLM

import tiny

from mezo.cli import run
from mezo.zo import ablations as zo_ablations
from mezo.zo.backend import FastNoise
from mezo.config.arguments import parse_args
from mezo.data.datasets import Collator
from mezo.errors import UsageError
from mezo.models.prompt_mlm import PromptMLM
from mezo.training.original_adamw import OriginalAdamW
from mezo.data.tasks import get_task
from mezo.training.trainer import MezoTrainer

LR, EPS, SEED = 1e-2, 1e-3, 3


_dataset = tiny.mask_dataset


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mlm_state(tiny_roberta_dir):
    mlm = AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir, hidden_dropout_prob=0.0,
                                               attention_probs_dropout_prob=0.0)
    return mlm


def _model(mlm_state):
    """A fresh PromptMLM with identical weights every call (deep copy of one loaded MLM)."""
    import copy
    torch.manual_seed(0)  # the unused classifier
    return PromptMLM(copy.deepcopy(mlm_state), 2, [10, 20])


class SeqTrainer(MezoTrainer):
    """Batches in dataset order, so hand computations know each batch."""

    def get_train_dataloader(self):
        return DataLoader(self.train_dataset, batch_size=self.args.train_batch_size, collate_fn=self.data_collator)


def _trainer(tmp_path, model, trainer_optim=True, data=None, **kw):
    return tiny.trainer(tmp_path, model, cls=SeqTrainer, train_dataset=data or _dataset(),
                        **{**dict(per_device_train_batch_size=12, per_device_eval_batch_size=12, learning_rate=LR,
                                  max_steps=1, seed=SEED, zero_order_eps=EPS, lr_scheduler_type="constant",
                                  zero_order_use_trainer_optim=trainer_optim), **kw})


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def _seeds(k, seed=SEED):
    rs = np.random.RandomState(seed)
    return [int(rs.randint(1_000_000_000)) for _ in range(k)]


@torch.no_grad()
def _loss(model, batch):
    model.eval()
    return model(**batch).loss.item()


@torch.no_grad()
def _pair(model, params, batch, seed, scales):
    """Hand-made SPSA pair: theta +/- scales_i z_i, restore; returns g and z."""
    noise = FastNoise()
    z = noise.draw_z(params, seed)
    # theta + s z, theta - s z, restore: applied by the noise's own in-place pass (which
    # tests/zo/test_zo.py holds to draw_z), so g carries the same float rounding as the step's
    with torch.no_grad():
        noise.add_(params, seed, scales)
        lp = _loss(model, batch)
        noise.add_(params, seed, [-2 * s for s in scales])
        lm = _loss(model, batch)
        noise.add_(params, seed, scales)
    return (lp - lm) / (2 * EPS), z


def _train_seeing_consts(t):
    """Train `t`; the block constants as each update's estimate saw them."""
    seen = []
    orig = t.zo_run.estimator.backward

    def spy(*a, **k):
        seen.append(dict(t.zo_run.ab.consts))
        return orig(*a, **k)
    t.zo_run.estimator.backward = spy
    t.train()
    return seen


def _close(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=3e-6, rtol=1e-5)


# --------------------------------------------------------------------------------- trainer path
def test_trainer_optim_sgd_equals_direct_path(tmp_path, mlm_state):
    """SGD, constant lr, no weight decay, same seeds: same parameters as the direct MeZO update.
    (max_grad_norm stays at its default 1.0: the stock clipping must not touch ZO gradients.)"""
    finals = []
    for i, trainer_optim in enumerate([False, True]):
        model = _model(mlm_state)
        trainer = _trainer(tmp_path / str(i), model, trainer_optim=trainer_optim, max_steps=3,
                           per_device_train_batch_size=4)
        trainer.train()
        assert trainer.state.global_step == 3 and trainer.zo_run.forwards == 6
        finals.append([p.detach().clone() for p in _params(model)])
    assert any(not torch.equal(a, b) for a, b in zip(finals[0], _params(_model(mlm_state))))
    _close(finals[1], finals[0])


def test_n_spsa_is_mean_of_n_pairs_and_scale_lr_with_samples(tmp_path, mlm_state):
    batch = Collator(1)(_dataset())
    for scale in (False, True):
        model = _model(mlm_state)
        params = _params(model)
        before = [p.detach().clone() for p in params]
        _trainer(tmp_path / str(scale), model, zero_order_sample=3, scale_lr_with_samples=scale).train()
        after = [p.detach().clone() for p in params]
        ref = _model(mlm_state)
        rp = _params(ref)
        est = [torch.zeros_like(p) for p in rp]
        for s in _seeds(3):
            g, z = _pair(ref, rp, batch, s, [EPS] * len(rp))
            for e, zz in zip(est, z):
                e.add_(g * zz / (1 if scale else 3))
        _close(after, [b - LR * e for b, e in zip(before, est)])


def test_gradient_accumulation_and_clipping(tmp_path, mlm_state):
    data = _dataset()
    halves = [Collator(1)(data[:6]), Collator(1)(data[6:])]
    model = _model(mlm_state)
    before = [p.detach().clone() for p in _params(model)]
    _trainer(tmp_path / "ga", model, per_device_train_batch_size=6, gradient_accumulation_steps=2).train()
    ref = _model(mlm_state)
    rp = _params(ref)
    est = [torch.zeros_like(p) for p in rp]
    for s, batch in zip(_seeds(2), halves):
        g, z = _pair(ref, rp, batch, s, [EPS] * len(rp))
        for e, zz in zip(est, z):
            e.add_(g * zz / 2)
    _close([p.detach() for p in _params(model)], [b - LR * e for b, e in zip(before, est)])

    # --zero_order_clip_grad: the update is the estimate clipped to norm max_grad_norm
    model = _model(mlm_state)
    _trainer(tmp_path / "clip", model, per_device_train_batch_size=6, gradient_accumulation_steps=2,
             zero_order_clip_grad=True, max_grad_norm=0.5).train()
    norm = math.sqrt(sum(float(e.pow(2).sum()) for e in est))
    assert norm > 0.5
    _close([p.detach() for p in _params(model)], [b - LR * e * 0.5 / norm for b, e in zip(before, est)])


def test_sample_schedule():
    assert zo_ablations.num_samples(None, 1, 5, 10) == 1
    assert zo_ablations.num_samples(None, 4, 5, 10) == 4  # differs from the reference (1)
    assert zo_ablations.num_samples("constant", 4, 0, 10) == 4
    assert [zo_ablations.num_samples("linear", 4, s, 10) for s in (0, 2, 3, 5, 9, 10)] == [1, 1, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        zo_ablations.num_samples("power", 4, 0, 10)


def test_momentum_and_adam_reach_the_stock_optimizer(tmp_path, mlm_state):
    t = _trainer(tmp_path / "m", _model(mlm_state), momentum=0.9, weight_decay=0.1)
    opt = t.create_optimizer()
    assert isinstance(opt, torch.optim.SGD) and all(g["momentum"] == 0.9 for g in opt.param_groups)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.1]
    t = _trainer(tmp_path / "a", _model(mlm_state), optimizer="adam")
    assert isinstance(t.create_optimizer(), OriginalAdamW)


# --------------------------------------------------------------------------------- variants
def test_blocks_and_param_norm_constants(mlm_state):
    model = _model(mlm_state)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    keys = zo_ablations.block_keys(names, 2)
    assert keys == ["embed", "lm_head", "layer.0.", "layer.1."]
    blocks = zo_ablations.assign_blocks(names, keys)
    by = dict(zip(names, blocks))
    assert by["roberta.embeddings.word_embeddings.weight"] == "embed"
    assert by["roberta.encoder.layer.1.output.dense.bias"] == "layer.1."
    assert by["lm_head.decoder.weight"] == "lm_head" and by["classifier.weight"] is None
    params = [p for _, p in named]
    c = zo_ablations.param_norm_constants(params, blocks)
    hand = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for n, p in named if ".layer.0." in n))
    assert c["layer.0."] == pytest.approx(hand)
    assert zo_ablations.safe_constant(0.0) == 1.0 and zo_ablations.safe_constant(float("nan")) == 1.0


@pytest.mark.parametrize("corrected", [False, True])
def test_scale_norm_by_num_params(tmp_path, mlm_state, corrected):
    """The original turns a param_norm constant c into c / sqrt(c) (README, Differences from
    the original code); the corrected reading divides by sqrt(#params of the block), as it does for
    back-propagated norms."""
    model = _model(mlm_state)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    hand = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for n, p in named if ".layer.0." in n))
    n0 = sum(p.numel() for n, p in named if ".layer.0." in n)
    t = _trainer(tmp_path, model, zo_variant="param_norm", scale_norm_by_num_params=True,
                 zo_variant_corrected=corrected)
    t.zo_run.ab.compute_consts(None, None, None)
    want = hand / math.sqrt(n0) if corrected else hand / math.sqrt(hand)
    assert t.zo_run.ab.consts["layer.0."] == pytest.approx(want)


def _variant_hand(mlm_state, consts_fn, change=False, pert_scaled=True):
    """theta after one step by hand: perturb z/c_b (or z), estimate g, update with c_b z (or z)."""
    model = _model(mlm_state)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    blocks = zo_ablations.assign_blocks([n for n, _ in named], zo_ablations.block_keys([n for n, _ in named], 2))
    consts = consts_fn(model, params, blocks)
    c = [zo_ablations.safe_constant(consts[b]) if b else 1.0 for b in blocks]
    batch = Collator(1)(_dataset())
    before = [p.detach().clone() for p in params]
    g, z = _pair(model, params, batch, _seeds(1)[0], [EPS / ci if pert_scaled else EPS for ci in c])
    return [b - LR * g * (1.0 if change else ci) * zz for b, ci, zz in zip(before, c, z)], consts


@pytest.mark.parametrize("corrected", [False, True])
@pytest.mark.parametrize("efficient", [True, False])
@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("change", [False, True])
def test_param_norm_variant_step(tmp_path, mlm_state, direct, change, efficient, corrected):
    # The original (README, Differences from the original code: --zo_variant): the efficient
    # perturbation ignores c_b, the direct update uses plain z, the trainer path writes c_b z into
    # .grad unless --change_grad_estimate. Corrected: c_b everywhere.
    pert_scaled = corrected or not efficient
    upd_plain = change or (direct and not corrected)
    expect, _ = _variant_hand(mlm_state, lambda m, p, b: zo_ablations.param_norm_constants(p, b), upd_plain,
                              pert_scaled)
    model = _model(mlm_state)
    t = _trainer(tmp_path, model, trainer_optim=not direct, zo_variant="param_norm", change_grad_estimate=change,
                 efficient_zero_order=efficient, zo_variant_corrected=corrected)
    t.train()
    _close([p.detach() for p in _params(model)], expect)
    assert set(t.zo_run.ab.consts) == {"embed", "lm_head", "layer.0.", "layer.1."}


def test_grad_norm_variant_step(tmp_path, mlm_state):
    batch = Collator(1)(_dataset())

    def backprop_norms(model, params, blocks):
        model.eval()
        grads = torch.autograd.grad(model(**batch).loss, params, allow_unused=True)
        sq = {}
        for g, b in zip(grads, blocks):
            if b:
                sq[b] = sq.get(b, 0.0) + (0.0 if g is None else float(g.double().pow(2).sum()))
        return {b: math.sqrt(v) for b, v in sq.items()}
    expect, consts = _variant_hand(mlm_state, backprop_norms)
    model = _model(mlm_state)
    t = _trainer(tmp_path, model, zo_variant="grad_norm", zo_variant_corrected=True)
    t.train()
    for b, v in consts.items():
        assert t.zo_run.ab.consts[b] == pytest.approx(v, rel=1e-4)
    _close([p.detach() for p in _params(model)], expect)
    assert all(p.grad is None for p in model.parameters())  # the norm pass leaves no .grad behind


def test_zo_grad_est_constants_and_recompute(tmp_path, mlm_state):
    ref = _model(mlm_state)
    named = [(n, p) for n, p in ref.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    blocks = zo_ablations.assign_blocks(names, zo_ablations.block_keys(names, 2))
    batch = Collator(1)(_dataset())
    hand = {}
    for s, key in zip(_seeds(4), ["embed", "lm_head", "layer.0.", "layer.1."]):
        sub = [p for (n, p), b in zip(named, blocks) if b == key]
        g, _ = _pair(ref, sub, batch, s, [EPS] * len(sub))
        hand[key] = abs(g)
    # one batch per epoch: 4 block pairs at the first epoch only, or at every epoch with --recompute_norms
    for recompute, forwards in ((False, 8 + 2 * 2), (True, 2 * (8 + 2))):
        t = _trainer(tmp_path / str(recompute), _model(mlm_state), zo_variant="grad_norm", use_zo_grad_est=True,
                     max_steps=2, recompute_norms=recompute)
        seen = _train_seeing_consts(t)
        assert t.zo_run.forwards == forwards
        for key, v in hand.items():
            assert seen[0][key] == pytest.approx(v, rel=1e-3, abs=2e-4)
        assert (seen[0] != seen[1]) == recompute


def test_zo_by_layer_and_running_update(tmp_path, mlm_state):
    model = _model(mlm_state)
    before = [p.detach().clone() for p in _params(model)]
    t = _trainer(tmp_path, model, zo_by_layer=True)
    t.train()
    assert t.zo_run.forwards == 2 * 5  # embed, lm_head, layer.0., layer.1., rest (classifier)
    ref = _model(mlm_state)
    named = [(n, p) for n, p in ref.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    blocks = zo_ablations.assign_blocks(names, zo_ablations.block_keys(names, 2))
    batch = Collator(1)(_dataset())
    est = {n: torch.zeros_like(p) for n, p in named}
    for s, key in zip(_seeds(5), ["embed", "lm_head", "layer.0.", "layer.1.", None]):
        sub = [(n, p) for (n, p), b in zip(named, blocks) if b == key]
        g, z = _pair(ref, [p for _, p in sub], batch, s, [EPS] * len(sub))
        for (n, _), zz in zip(sub, z):
            est[n] += g * zz
    _close([p.detach() for p in _params(model)], [b - LR * est[n] for b, (n, _) in zip(before, named)])

    # --norm_running_update: each block constant becomes |g_b c_b| after its pair
    t = _trainer(tmp_path / "r", _model(mlm_state), zo_by_layer=True, zo_variant="grad_norm",
                 norm_running_update=True, max_steps=2)
    seen = _train_seeing_consts(t)
    assert seen[0] != seen[1] and set(seen[1]) == {"embed", "lm_head", "layer.0.", "layer.1."}


def test_layer_wise_selection(tmp_path, mlm_state):
    names = ["a.embeddings.x", "a.encoder.layer.0.q", "a.encoder.layer.1.q", "a.encoder.layer.10.q", "head.w"]
    assert zo_ablations.layer_wise_indices(names, 0, 12) == [1]
    assert zo_ablations.layer_wise_indices(names, 13, 12) == [2]
    assert zo_ablations.layer_wise_indices(names, 10, 12) == [3]
    for direct in (True, False):
        model = _model(mlm_state)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        _trainer(tmp_path / str(direct), model, trainer_optim=not direct, layer_wise_optim=True).train()
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed and all(".layer.0." in n for n in changed)


def test_optimize_acc_objective(tmp_path, mlm_state):
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0], [3.0, 0.0]])
    assert zo_ablations.minus_accuracy(logits, torch.tensor([1, 0, 0, 0])).item() == pytest.approx(-0.75)
    model = _model(mlm_state)
    t = _trainer(tmp_path, model, optimize_acc=True)
    batch = Collator(1)(_dataset())
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    acc = (out.logits.argmax(-1) == batch["labels"]).float().mean().item()
    assert t.zo_forward(model, batch).item() == pytest.approx(-acc)


def test_max_zo_forward_steps_stops_training(tmp_path, mlm_state):
    t = _trainer(tmp_path, _model(mlm_state), trainer_optim=False, max_steps=10, max_zo_forward_steps=5,
                 per_device_train_batch_size=4)
    t.train()
    assert t.state.global_step == 3 and t.zo_run.forwards == 6  # stops once the count exceeds 5
    t = _trainer(tmp_path / "n", _model(mlm_state), max_steps=10, max_zo_forward_steps=5, zero_order_sample=2,
                 per_device_train_batch_size=4)
    t.train()
    assert t.state.global_step == 2 and t.zo_run.forwards == 8


# --------------------------------------------------------------------------------- flag checks
DATA = "data/k-shot-1k-test/uci-sentiment/16-42"
BASE = ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", DATA,
        "--few_shot_type", "prompt", "--template", "*cls**sent_0*_It_was*mask*.*sep+*",
        "--mapping", "{0:'terrible',1:'great'}", "--output_dir", "/tmp/unused", "--do_train"]
ZO = ["--zero_order_optim", "--efficient_zero_order"]
BAD = [
    (ZO + ["--zero_order_sample", "4"], "--zero_order_sample 4"),
    (ZO + ["--zo_by_layer"], "--zo_by_layer"),
    (ZO + ["--zero_order_clip_grad"], "--zero_order_clip_grad"),
    (ZO + ["--zero_order_use_trainer_optim", "--zero_order_sample_scheduler", "power"], "power"),
    (ZO + ["--zo_variant", "hessian"], "--zo_variant"),
    (ZO + ["--zo_variant", "param_norm", "--use_zo_grad_est"], "--use_zo_grad_est"),
    (ZO + ["--recmopute_norms"], "--recompute_norms"),
    (ZO + ["--zero_order_use_trainer_optim", "--zo_variant", "grad_norm", "--norm_running_update"],
     "--norm_running_update"),
    (ZO + ["--momentum", "0.9", "--optimizer", "sgd"], "--momentum"),
    (["--optimize_acc"], "--zero_order_optim"),
    (["--momentum", "0.9", "--optimizer", "adam"], "--momentum"),
    (["--prob_as_feature"], "--prob_as_feature"),
]


@pytest.mark.parametrize("extra,needle", BAD, ids=[b[1] for b in BAD])
def test_bad_flag_combinations(repo_root, monkeypatch, extra, needle):
    monkeypatch.chdir(repo_root)
    with pytest.raises(UsageError, match=needle.replace("-", r"\-")):   # parsing or the task checks
        run.validate(*parse_args(BASE + extra), get_task("uci-sentiment"))


def test_good_flag_combinations(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    for extra in (ZO + ["--zero_order_use_trainer_optim", "--zero_order_sample", "4", "--optimizer", "sgd",
                        "--momentum", "0.9", "--zo_variant", "grad_norm", "--recmopute_norms", "--zo_by_layer",
                        "--norm_running_update", "--zero_order_clip_grad", "--optimize_acc"],
                  ZO + ["--zo_variant", "param_norm", "--layer_wise_optim", "--max_zo_forward_steps", "10"],
                  ["--trainer", "linearhead", "--prob_as_feature", "--lp_early_stopping"]):
        m, d, a, ad = parse_args(BASE + extra)
        run.validate(m, d, a, ad, get_task("uci-sentiment"))
