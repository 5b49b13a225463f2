"""--bf16 without a GPU: CPU autocast for the forwards, fp32 master weights, no extra flag needed."""
import json

import pytest
import torch
from transformers import AutoModelForMaskedLM

from mezo.cli import run
import tiny

from mezo.models.prompt_mlm import PromptMLM

pytestmark = pytest.mark.skipif(torch.accelerator.is_available(), reason="checks the CPU-only path")


def _trainer(tmp_path, model, zo_on):
    return tiny.trainer(tmp_path, model, zo=zo_on, max_steps=2, bf16=True, use_cpu=False)   # bf16 alone must do


@pytest.mark.parametrize("zo_on", [True, False], ids=["mezo", "adam"])
def test_bf16_forwards_autocast_and_weights_stay_fp32(tmp_path, tiny_roberta_dir, one_thread, zo_on):
    model = PromptMLM(AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir), 2, [10, 20])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []   # (autocast on?, dtype of a Linear's output) for every forward of the training step
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, i, o: seen.append((torch.is_autocast_enabled("cpu"), o.dtype)))
    trainer = _trainer(tmp_path, model, zo_on)
    assert trainer.args.use_cpu and trainer.args.device.type == "cpu"
    assert trainer.args.dataloader_pin_memory is False   # nothing to pin to: no warning per loader
    trainer.train()
    # MeZO: two forwards per step; Adam: one forward per step (its backward runs no forward hook).
    assert seen == [(True, torch.bfloat16)] * (4 if zo_on else 2)
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32, n
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


@pytest.mark.parametrize("extra", [
    ["--zero_order_optim", "--efficient_zero_order", "--optimizer", "sgd", "--learning_rate", "1e-4"],
    ["--optimizer", "adam", "--learning_rate", "1e-5"]], ids=["mezo", "adam"])
def test_bf16_run_completes_on_cpu(tmp_path, one_thread, extra):
    data = tiny.small_uci_split(tmp_path / "data", 20)
    log = tmp_path / "log"
    argv = ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", data,
            "--few_shot_type", "prompt", "--template", "*cls**sent_0*_It_was*mask*.*sep+*",
            "--mapping", "{0:'terrible',1:'great'}", "--output_dir", str(tmp_path / "out"),
            "--log_file", str(log), "--do_train", "--do_predict", "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "32", "--seed", "42",
            "--disable_tqdm", "true", "--bf16", *extra]
    assert run.main(argv) == 0
    rec = json.loads(log.read_text())
    assert rec["bf16"] is True and rec["global_step"] == 2
    assert 0 <= rec["uci-sentiment_test_eval_acc"] <= 1
