"""README's "MeZO in your own training loop" example runs as written (offline: the embedded model),
and its checkpoint resumes the run bit for bit."""
import copy
import re

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


def _readme_example(repo_root):
    text = open(f"{repo_root}/README.md").read()
    block = text.split("<!-- own-loop example: tests/zo/test_own_loop.py runs this block -->", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def test_readme_own_loop_example(repo_root, splade_dir, tmp_path):
    code = _readme_example(repo_root)
    assert len(code.strip().splitlines()) <= 20
    ckpt = str(tmp_path / "mezo.pt")
    for old, new in [('name = "roberta-large"', f"name = {splade_dir!r}"), ("range(100)", "range(5)"),
                     ('"mezo.pt"', repr(ckpt))]:
        assert old in code
        code = code.replace(old, new)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    model, opt, sched, batch = scope["model"], scope["opt"], scope["sched"], scope["batch"]
    assert isinstance(opt, torch.optim.Optimizer)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or "classifier" in n or "score" in n for n in trained)
    assert len(opt.params) == len(trained)
    # the scheduler drove the lr: 5 of LinearLR's 100 iterations from 1e-3 towards 1e-4
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 0.9 * 5 / 100))

    # resume from the checkpoint into a fresh optimizer (another seed: the stream must come back)
    from mezo.zo import MeZO
    ck = torch.load(ckpt)
    model2 = copy.deepcopy(model)
    model2.load_state_dict(ck["model"])
    opt2 = MeZO(model2.parameters(), lr=1e-3, eps=1e-3, seed=7)
    sched2 = torch.optim.lr_scheduler.LinearLR(opt2, start_factor=1.0, end_factor=0.1, total_iters=100)
    opt2.load_state_dict(ck["opt"])
    sched2.load_state_dict(ck["sched"])

    # every step is a MeZO step: g = (l+ - l-) / 2eps, and only the trainable parameters move
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for m, o, s in [(model, opt, sched), (model2, opt2, sched2)]:
        o.step(lambda: m(**batch).loss)
        s.step()
    lp, lm, g, skipped = opt.last
    assert not skipped and g == pytest.approx((lp - lm) / 2e-3)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert g != 0 and moved == trained   # the frozen base model never changes
    assert opt2.last == opt.last
    for (n, p), (_, q) in zip(model.named_parameters(), model2.named_parameters()):
        assert torch.equal(p, q), n
