"""README's "MeZO in your own training loop" example runs as written (offline: the embedded model)."""
import re

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


def _readme_example(repo_root):
    text = open(f"{repo_root}/README.md").read()
    block = text.split("<!-- own-loop example: tests/test_own_loop.py runs this block -->", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def test_readme_own_loop_example_trains_only_the_adapters(repo_root, splade_dir):
    code = _readme_example(repo_root)
    assert 'name = "roberta-large"' in code and "range(100)" in code
    code = code.replace('name = "roberta-large"', f"name = {splade_dir!r}").replace("range(100)", "range(5)")
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    model, opt = scope["model"], scope["opt"]
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or "classifier" in n or "score" in n for n in trained)
    assert len(opt.params) == len(trained)
    # every step is a MeZO step: g = (l+ - l-) / 2eps, and only the trainable parameters move
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step(lambda: model(**scope["batch"]).loss)
    lp, lm, g, skipped = opt.last
    assert not skipped and g == pytest.approx((lp - lm) / 2e-3)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert g != 0 and moved == trained   # the frozen base model never changes
