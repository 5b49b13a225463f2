"""The Trainer subclass: step counts, evaluation cadence, best-dev selection, MeZO invariants."""
import numpy as np
import pytest
import torch

import tiny

from mezo.zo.backend import FastNoise
from mezo.data.datasets import Collator
from mezo.training.callbacks import BestDevCallback


_dataset = tiny.mask_dataset


def _model(path, dropout=0.1):
    return tiny.prompt_model(path, dropout)


def _trainer(tmp_path, model, zo_on=True, **kw):
    scores = iter([0.5, 0.7, 0.7, 0.6, 0.9, 0.1, 0.2])
    sched = {"lr_scheduler_type": "constant"} if zo_on else {}
    return tiny.trainer(tmp_path, model, zo=zo_on, eval_dataset=_dataset(4, 1),
                        compute_metrics=lambda p: {"acc": next(scores)}, dev_objective=lambda m: m["eval_acc"],
                        **{**dict(max_steps=7, evaluate_during_training=True, eval_steps=3), **sched, **kw})


@pytest.mark.parametrize("zo_on", [True, False])
def test_exactly_max_steps_and_eval_every_eval_steps(tmp_path, tiny_roberta_dir, zo_on):
    trainer = _trainer(tmp_path, _model(tiny_roberta_dir), zo_on=zo_on)
    trainer.train()
    assert trainer.state.global_step == 7
    assert [s for s, _ in trainer.best.curve] == [3, 6]  # no extra evaluation at step 7
    assert trainer.best.best_step == 6  # scores 0.5, 0.7: the second is strictly better
    if zo_on:
        assert trainer.zo_run.forwards == 14


def test_best_dev_takes_first_strictly_best_and_restores_it():
    model = torch.nn.Linear(2, 1)
    cb = BestDevCallback(lambda m: m["acc"])
    cb.on_train_begin(None, None, None)
    state = type("S", (), {})()
    snapshots = {}
    for step, score in enumerate([0.5, 0.8, 0.8, 0.3], 1):
        with torch.no_grad():
            model.weight.fill_(float(step))
        state.global_step = step
        snapshots[step] = model.weight.detach().clone()
        cb.on_evaluate(None, state, None, metrics={"acc": score}, model=model)
    assert cb.best_step == 2 and cb.best_score == 0.8
    with torch.no_grad():
        model.weight.fill_(-1.0)
    assert cb.restore(model)
    assert torch.equal(model.weight, snapshots[2])
    empty = BestDevCallback(lambda m: m["acc"])
    assert not empty.restore(model)


def test_mezo_step_matches_spec_arithmetic(tmp_path, tiny_roberta_dir):
    """One trainer step = θ - lr·g·z, z regenerated from the seed drawn by RandomState(--seed)."""
    model = _model(tiny_roberta_dir, dropout=0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    # one batch = the whole dataset, so the loss does not depend on the sampler's order
    _trainer(tmp_path, model, max_steps=1, evaluate_during_training=False, per_device_train_batch_size=12).train()
    after = [p.detach().clone() for p in params]

    seed = int(np.random.RandomState(3).randint(1_000_000_000))
    batch = Collator(1)(_dataset())
    model.eval()
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
        z = FastNoise().draw_z(params, seed)
        for p, zz in zip(params, z):
            p.add_(zz, alpha=1e-3)
        loss_plus = model(**batch).loss.item()
        for p, zz in zip(params, z):
            p.add_(zz, alpha=-2e-3)
        loss_minus = model(**batch).loss.item()
    g = (loss_plus - loss_minus) / 2e-3
    for a, b, zz in zip(after, before, z):
        torch.testing.assert_close(a, b - 1e-3 * g * zz, atol=2e-6, rtol=1e-5)


def test_mezo_frozen_untouched_no_grads_no_state_dropout_off(tmp_path, tiny_roberta_dir):
    model = _model(tiny_roberta_dir, dropout=0.3)
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith("roberta.embeddings"))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    modes = []
    hook = model.roberta.encoder.register_forward_pre_hook(lambda m, a: modes.append(m.training))
    trainer = _trainer(tmp_path, model, evaluate_during_training=False, max_steps=3)
    trainer.train()
    hook.remove()
    assert modes and not any(modes)  # every ZO forward ran in eval mode (dropout off)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in trained.items())
    assert all(p.grad is None for p in model.parameters())
    assert len(trainer.optimizer.state) == 0


def test_same_seed_same_parameters(tmp_path, tiny_roberta_dir):
    finals = []
    for i in range(2):
        torch.manual_seed(0)  # the unused classifier is freshly initialised
        model = _model(tiny_roberta_dir)
        _trainer(tmp_path / str(i), model, evaluate_during_training=False, max_steps=4).train()
        finals.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert all(torch.equal(finals[0][n], finals[1][n]) for n in finals[0])
