"""--zo_method through run.py: each method of mezo.zo.methods trains on the demo split, and its
Trainer step is the library's step (same seeds from RandomState(--seed), same learning rate)."""
import json
import types

import pytest
import torch

from mezo.cli import run
import tiny
from mezo.data.datasets import Collator, original_train_sampler
from mezo.models.prompt_mlm import PromptMLM

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(tmp_path, model, method, **kw):
    return tiny.trainer(tmp_path, model, **{**dict(per_device_train_batch_size=12, zo_method=method), **kw})


# (fzoo divides its step by the spread of N nearly equal losses, which turns float rounding between
# two otherwise identical forwards into visible differences; its rule is checked in test_zo_methods.py)
@pytest.mark.parametrize("method", ["sign", "momentum", "adam", "hizoo", "lozo"])
def test_trainer_step_is_the_library_step(tmp_path, tiny_roberta_dir, method):
    from transformers import AutoModelForMaskedLM
    mlm = AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir, hidden_dropout_prob=0.0,
                                               attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = PromptMLM(mlm, 2, [10, 20])
    ref = PromptMLM(AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir, hidden_dropout_prob=0.0,
                                                         attention_probs_dropout_prob=0.0), 2, [10, 20])
    ref.load_state_dict(model.state_dict())
    _trainer(tmp_path, model, method).train()    # one batch of all 12 rows per step
    params = [p for p in ref.parameters() if p.requires_grad]
    lib = tiny.zo_build(method, params, lr=1e-3, eps=1e-3, weight_decay=0.0, seed=3)   # the run's --seed 3
    torch.manual_seed(3)   # the Trainer seeds with --seed, then its loader draws the data order
    order = list(original_train_sampler(range(12), types.SimpleNamespace(data_seed=None)))
    batch = Collator(1)([tiny.mask_dataset()[i] for i in order])
    ref.eval()
    for _ in range(3):
        lib.step(lambda: ref(**batch).loss)
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)   # a wrong seed or lr misses by ~5e-4
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), PromptMLM(
        AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir), 2, [10, 20]).parameters()))


def test_run_py_trains_with_a_method_and_records_it(tmp_path):
    data = tiny.small_uci_split(tmp_path / "d", test_rows=8)
    log = tmp_path / "log"
    argv = ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", data,
            "--few_shot_type", "prompt", "--template", tiny.SENT_TEMPLATE, "--mapping", tiny.SENT_MAPPING,
            "--output_dir", str(tmp_path / "o"), "--log_file", str(log), "--do_train", "--do_eval", "--do_predict",
            "--max_steps", "2", "--per_device_train_batch_size", "8", "--zero_order_optim", "--efficient_zero_order",
            "--zo_method", "lozo", "--lozo_rank", "2", "--lozo_nu", "1", "--disable_tqdm", "true"]
    assert run.main(argv) == 0
    rec = json.loads(log.read_text().splitlines()[0])
    assert rec["zo_method"] == "lozo" and rec["lozo_rank"] == 2 and rec["global_step"] == 2


@pytest.mark.parametrize("extra,needle", [
    (["--zo_method", "hizoo"], "--zo_method hizoo: needs --zero_order_optim"),
    (["--zero_order_optim", "--zo_method", "conservative", "--weight_decay", "0.1"], "defined without weight decay"),
    (["--zero_order_optim", "--zo_method", "fzoo", "--fzoo_n", "1"], "--fzoo_n 1"),
    (["--zero_order_optim", "--zo_method", "sign", "--layer_wise_optim"], "--layer_wise_optim: a MeZO ablation"),
])
def test_method_flags_are_checked(tmp_path, capsys, extra, needle):
    data = tiny.small_uci_split(tmp_path / "d", test_rows=8)
    argv = ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", data,
            "--few_shot_type", "prompt", "--template", tiny.SENT_TEMPLATE, "--mapping", tiny.SENT_MAPPING,
            "--output_dir", str(tmp_path / "o"), "--log_file", str(tmp_path / "log"), "--do_train", *extra]
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and needle in err[-1], err


@pytest.mark.parametrize("method", ["mezo", "lozo"])
def test_gradient_accumulation_equals_the_full_batch(tmp_path, tiny_roberta_dir, method):
    """--gradient_accumulation_steps 3 with micro-batches of 4 gives the parameters of batch 12: the
    same rows per update (the sampler's order), one seed per update, the losses averaged under the
    same perturbation."""
    from transformers import AutoModelForMaskedLM
    finals = []
    for bs, accum in ((12, 1), (4, 3)):
        mlm = AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir, hidden_dropout_prob=0.0,
                                                   attention_probs_dropout_prob=0.0)
        torch.manual_seed(0)
        model = PromptMLM(mlm, 2, [10, 20])
        t = _trainer(tmp_path / f"{bs}", model, method, per_device_train_batch_size=bs,
                     gradient_accumulation_steps=accum)
        t.train()
        assert t.state.global_step == 3 and t.zo_run.forwards == 3 * 2 * accum
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(finals[0], PromptMLM(
        AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir), 2, [10, 20]).parameters()))
