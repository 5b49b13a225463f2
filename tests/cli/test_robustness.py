"""Robustness: bad input is refused before any model loads, the log survives concurrency and damage,
a non-finite MeZO loss skips its update and too many of them stop the run."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import tiny
import torch
from transformers import TrainerCallback

from mezo.cli import run
from mezo.experiments import results
from mezo.errors import TrainingDiverged
from mezo.training import checkpoint
from mezo.training.callbacks import DataOrder
from mezo.training.trainer import MezoTrainer
from mezo.training.zo_run import skip_limit

TEMPLATE = "*cls**sent_0*_It_was*mask*.*sep+*"
MAPPING = "{0:'terrible',1:'great'}"
LOG_BEFORE = b'{"existing": 1}\nnot json at all\n{"existing": 2}\n'


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, repo_root):
    return tiny.small_uci_split(tmp_path_factory.mktemp("rdata") / "uci-sentiment" / "16-42", 24)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_roberta_dir):
    """A tokenizer+config folder without weights, and a config-only folder of an unsupported type."""
    root = tmp_path_factory.mktemp("models")
    no_weights = root / "no_weights"
    shutil.copytree(tiny_roberta_dir, no_weights,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt"))
    distil = root / "distil"
    distil.mkdir()
    (distil / "config.json").write_text(json.dumps({"model_type": "distilbert", "vocab_size": 100, "dim": 32,
                                                    "n_layers": 1, "n_heads": 2, "hidden_dim": 37}))
    return {"no_weights": str(no_weights), "distil": str(distil)}


def _argv(data_dir, out, log, *extra, model="splade-tiny"):
    return ["--model_name_or_path", model, "--task_name", "uci-sentiment", "--data_dir", data_dir,
            "--few_shot_type", "prompt", "--template", TEMPLATE, "--mapping", MAPPING,
            "--output_dir", str(out), "--log_file", str(log), "--do_train", "--do_eval", "--do_predict",
            "--max_steps", "2", "--per_device_train_batch_size", "8", "--seed", "42", "--disable_tqdm", "true",
            *extra]


def _fake_checkpoint(path, **args):
    os.makedirs(path)
    torch.save({}, os.path.join(path, "trainable_params.pt"))
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump({"format": args.pop("format", checkpoint.FORMAT), "global_step": 3, "args": args}, f)


# (id, extra argv, needle that must be in the one-line message); {tmp}, {nw}, {distil} are filled in.
BAD = [
    ("task", ["--task_name", "nope"], "--task_name nope"),
    ("data_dir-missing", ["--data_dir", "/no/such/dir"], "--data_dir /no/such/dir: no such folder"),
    ("data_dir-no-split", ["--data_dir", "{tmp}/only_train"], "missing split file"),
    ("template-no-mask", ["--template", "*cls**sent_0*_It_was.*sep+*"], "--template"),
    ("mapping-unparsable", ["--mapping", "{0:'terrible'"], "--mapping"),
    ("mapping-wrong-keys", ["--mapping", "{0:'terrible',5:'great'}"], "--mapping"),
    ("mapping-extra-key", ["--mapping", "{0:'terrible',1:'great',2:'okay'}"], "--mapping"),
    ("label-word-not-one-token", ["--mapping", "{0:'zzzqqqxx',1:'great'}"], "not a single token"),
    ("label-word-before-weights", ["--model_name_or_path", "{nw}", "--mapping", "{0:'qqqqzzzzxxxx',1:'great'}",
                                   "--first_sent_limit", "40"], "--mapping"),
    ("train-batch", ["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0"),
    ("eval-batch", ["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size 0"),
    ("lr-negative", ["--learning_rate", "-1"], "--learning_rate -1"),
    ("lr-nan", ["--learning_rate", "nan"], "--learning_rate nan"),
    ("eps-zero", ["--zero_order_optim", "--zero_order_eps", "0"], "--zero_order_eps 0"),
    ("eps-inf", ["--zero_order_optim", "--zero_order_eps", "inf"], "--zero_order_eps inf"),
    ("steps-zero", ["--max_steps", "0"], "--max_steps 0"),
    ("steps-negative", ["--max_steps", "-5"], "--max_steps -5"),
    ("epochs-zero", ["--max_steps", "-1", "--num_train_epochs", "0"], "--num_train_epochs 0"),
    ("eval_steps-missing", ["--evaluate_during_training"], "--eval_steps"),
    ("eval_steps-zero", ["--evaluate_during_training", "--eval_steps", "0"], "--eval_steps"),
    ("grad-accum", ["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps 0"),
    ("lora-no-rank", ["--apply_lora"], "--apply_lora"),
    ("lora-model-type", ["--model_name_or_path", "{distil}", "--apply_lora", "--lora_r", "8", "--lora_alpha", "16"],
     "--apply_lora: model type 'distilbert' is not supported"),
    ("prefix-model-type", ["--model_name_or_path", "{distil}", "--prefix_tuning"],
     "--prefix_tuning: model type 'distilbert' is not supported"),
    ("save_steps", ["--save_steps", "-1"], "--save_steps -1"),
    ("save_total_limit", ["--save_total_limit", "0"], "--save_total_limit 0"),
    ("resume-missing", ["--resume_from_checkpoint", "/no/such/checkpoint-5"], "--resume_from_checkpoint /no/such"),
    ("resume-not-checkpoint", ["--resume_from_checkpoint", "{tmp}/only_train"], "not a complete checkpoint"),
    ("resume-other-lr", ["--resume_from_checkpoint", "{tmp}/ck/checkpoint-3", "--learning_rate", "1e-4"],
     "written with --learning_rate 0.001, this run has --learning_rate 0.0001"),
    ("resume-no-train", ["--resume_from_checkpoint", "auto", "--no_train"], "needs --do_train"),
    ("output_dir-not-empty", ["--output_dir", "{tmp}/only_train"], "--output_dir"),
    # every path the run writes, checked before anything loads
    ("log-is-folder", ["--log_file", "{tmp}/only_train"], "--log_file {tmp}/only_train: is a folder, expected a file"),
    ("log-under-a-file", ["--log_file", "{tmp}/only_train/train.csv/log"],
     "--log_file {tmp}/only_train/train.csv/log: {tmp}/only_train/train.csv is a file"),
    ("log-under-a-file-deeper", ["--log_file", "{tmp}/only_train/train.csv/a/log"],
     "--log_file {tmp}/only_train/train.csv/a/log: cannot be created, {tmp}/only_train/train.csv is a file"),
    ("log-lock-is-folder", ["--log_file", "{tmp}/locked/log"], "its lock file {tmp}/locked/log.lock is a folder"),
    ("log-not-writable", ["--log_file", "/sys/mezo-log"], "--log_file /sys/mezo-log: not writable (/sys: "),
    ("model-folder-not-a-model", ["--model_name_or_path", "{tmp}/only_train"],
     "--model_name_or_path {tmp}/only_train: cannot load this local folder"),
    ("output_dir-empty", ["--output_dir", ""], "--output_dir '': an empty path"),
    ("log-empty", ["--log_file", ""], "--log_file '': an empty path"),
    ("output_dir-is-file", ["--output_dir", "{tmp}/only_train/train.csv"], "exists and is not a folder"),
    ("output_dir-under-a-file", ["--output_dir", "{tmp}/only_train/train.csv/out"],
     "--output_dir {tmp}/only_train/train.csv/out: cannot be created, {tmp}/only_train/train.csv is a file"),
    ("output_dir-not-writable", ["--output_dir", "/sys/mezo-out/x"], "--output_dir /sys/mezo-out/x: not writable"),
    ("save_logit_dir-is-file", ["--save_logit", "--save_logit_dir", "{tmp}/only_train/train.csv"],
     "--save_logit_dir {tmp}/only_train/train.csv: exists and is not a folder"),
    ("cache_dir-under-a-file", ["--cache_dir", "{tmp}/only_train/train.csv/c"], "--cache_dir"),
    ("checkpoint-name-taken", ["--output_dir", "{tmp}/ckfile", "--overwrite_output_dir", "--save_steps", "1"],
     "--output_dir {tmp}/ckfile: checkpoint-2 is a file where checkpoints go"),
    ("resume-damaged", ["--resume_from_checkpoint", "{tmp}/ckbad/checkpoint-3", "--output_dir", "{tmp}/ckbad"],
     "--resume_from_checkpoint {tmp}/ckbad/checkpoint-3: damaged checkpoint (trainable_params.pt is damaged"),
    ("resume-old-format", ["--resume_from_checkpoint", "{tmp}/ckold/checkpoint-3", "--output_dir", "{tmp}/ckold"],
     "--resume_from_checkpoint {tmp}/ckold/checkpoint-3: damaged checkpoint (checkpoint format 1, this version "
     "reads 2 (written by an older version: restart the run))"),
    # ranges (mezo.config.ranges) and argparse's own errors, one line each
    ("seed-negative", ["--seed", "-1"], "--seed -1: must be an integer in [0, 4294967295]"),
    ("seed-too-big", ["--seed", "4294967296"], "--seed 4294967296: must be an integer in [0, 4294967295]"),
    ("seed-not-int", ["--seed", "abc"], "argument --seed: invalid int value: 'abc'"),
    ("steps-float", ["--max_steps", "1.5"], "argument --max_steps/--max-steps: invalid int value: '1.5'"),
    ("optimizer-choice", ["--optimizer", "lion"], "argument --optimizer: invalid choice: 'lion'"),
    ("demo_filter_rate", ["--demo_filter_rate", "1.5"], "--demo_filter_rate 1.5: must be a number in (0, 1]"),
    ("adam_beta2", ["--adam_beta2", "1"], "--adam_beta2 1.0: must be a number in [0, 1)"),
    ("max_grad_norm-nan", ["--max_grad_norm", "nan"], "--max_grad_norm nan"),
    ("num_k", ["--num_k", "0"], "--num_k 0: must be an integer >= 1"),
    ("first_sent_limit", ["--first_sent_limit", "0"], "--first_sent_limit 0: must be an integer >= 1"),
    ("warmup-negative", ["--warmup_steps", "-2"], "--warmup_steps -2.0: must be a number >= 0"),
    ("label_smoothing", ["--label_smoothing_factor", "1"], "--label_smoothing_factor 1.0"),
    ("workers", ["--dataloader_num_workers", "-1"], "--dataloader_num_workers -1"),
    # against the model's config, before its weights
    ("seq-over-positions", ["--max_seq_length", "600"],
     "--max_seq_length 600: 600 tokens exceed the 512 positions of splade-tiny (bert)"),
    ("seq-doubled-over-positions", ["--few_shot_type", "prompt-demo", "--double_demo", "--max_seq_length", "300"],
     "--max_seq_length 300: 600 tokens (doubled by --double_demo) exceed the 512 positions"),
    ("segments-over-token-types", ["--template", "*cls**sent_0**sep+*_*sent_0**sep+**mask**sep+*"],
     "--template '*cls**sent_0**sep+*_*sent_0**sep+**mask**sep+*': 3 segments (one per *sep+*) but "
     "splade-tiny (bert) has 2 token types"),
    ("prefix-over-positions", ["--prefix_tuning", "--no_reparam", "--prefix_init_by_real_act", "--num_prefix", "513"],
     "--num_prefix 513: --prefix_init_by_real_act runs that many tokens through a model with 512 positions"),
]


@pytest.mark.parametrize("extra,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_exit_2_one_line_log_byte_identical(tmp_path, data_dir, model_dirs, capsys, extra, needle):
    only = tmp_path / "only_train"
    only.mkdir()
    shutil.copy(os.path.join(data_dir, "train.csv"), only / "train.csv")
    _fake_checkpoint(str(tmp_path / "ck" / "checkpoint-3"), learning_rate=1e-3)
    _fake_checkpoint(str(tmp_path / "ckbad" / "checkpoint-3"), learning_rate=1e-3)
    _fake_checkpoint(str(tmp_path / "ckold" / "checkpoint-3"), learning_rate=1e-3, format=1)   # before the optimizers
    with open(tmp_path / "ckbad" / "checkpoint-3" / "trainable_params.pt", "r+b") as f:
        f.truncate(20)  # a torch zip cut short
    (tmp_path / "locked" / "log.lock").mkdir(parents=True)
    (tmp_path / "ckfile").mkdir()
    (tmp_path / "ckfile" / "checkpoint-2").write_text("not a checkpoint")
    fill = {"tmp": str(tmp_path), "nw": model_dirs["no_weights"], "distil": model_dirs["distil"]}
    for key, value in fill.items():
        extra = [x.replace("{%s}" % key, value) for x in extra]
    log = tmp_path / "log"
    log.write_bytes(LOG_BEFORE)
    assert run.main(_argv(data_dir, tmp_path / "out", log, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    needle = needle.replace("{tmp}", str(tmp_path))
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert "Traceback" not in err[0]
    assert log.read_bytes() == LOG_BEFORE


# ----- the log under concurrency ---------------------------------------------------------------
WRITER = """
import sys
from mezo.experiments.results import append_record
w = int(sys.argv[1])
for i in range(50):
    append_record(sys.argv[2], {{"task_name": "uci-sentiment", "writer": w, "i": i, "seed": w, "tag": "c",
        "num_k": 16, "output_dir": "out/%d/%d" % (w, i), "data_dir": "d/16-%d" % w,
        "uci-sentiment_dev_eval_acc": i / 50, "uci-sentiment_test_eval_acc": 0.5,
        "pad": "x" * (5000 + 997 * i)}})
"""


def test_eight_writers_400_whole_lines_then_gather_skips_damage(tmp_path, repo_root):
    log = tmp_path / "log"
    log.write_bytes(LOG_BEFORE)
    code = WRITER.format(root=repo_root)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w), str(log)]) for w in range(8)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    data = log.read_bytes()
    assert data.startswith(LOG_BEFORE)  # never rewritten or truncated
    lines = data[len(LOG_BEFORE):].decode().splitlines()
    assert len(lines) == 400
    recs = [json.loads(line) for line in lines]
    assert sorted((r["writer"], r["i"]) for r in recs) == [(w, i) for w in range(8) for i in range(50)]
    for w in range(8):  # each writer's records in its own order
        assert [r["i"] for r in recs if r["writer"] == w] == list(range(50))

    # a damaged line (a killed writer without the lock, a truncated copy) is skipped with its number
    with open(log, "ab") as f:
        f.write(b'{"task_name": "uci-sentiment", "trunc\n')
    p = subprocess.run([sys.executable, "tools/gather_result.py", "--log", str(log),
                        "--condition", "{'task_name': 'uci-sentiment', 'tag': 'c'}"],
                       cwd=repo_root, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert f"{log}:2: damaged record skipped" in p.stderr
    assert f"{log}:404: damaged record skipped" in p.stderr
    assert "(#seeds 8) (#runs 400.0)" in p.stdout


# ----- non-finite MeZO losses ----------------------------------------------------------------
def _zo_trainer(tmp_path, tiny_roberta_dir, **kw):
    from transformers import AutoModelForMaskedLM

    from mezo.config.arguments import MezoTrainingArguments
    from mezo.data.datasets import Collator
    from mezo.models.prompt_mlm import PromptMLM

    torch.manual_seed(0)
    model = PromptMLM(AutoModelForMaskedLM.from_pretrained(tiny_roberta_dir), 2, [10, 20])
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(8):
        ids = torch.randint(5, 300, (6,), generator=g).tolist()
        ids[2] = 4
        items.append({"input_ids": ids, "attention_mask": [1] * 6, "mask_pos": 2, "label": i % 2})
    args = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, learning_rate=1e-2,
                max_steps=3, logging_steps=1, seed=3, disable_tqdm=True, use_cpu=True, zero_order_optim=True,
                efficient_zero_order=True, zero_order_eps=1e-3, optimizer="sgd", lr_scheduler_type="constant")
    args.update(kw)
    return MezoTrainer(model=model, args=MezoTrainingArguments(**args), train_dataset=items,
                       data_collator=Collator(1), dev_objective=lambda m: m["eval_acc"])


def _params(trainer):
    return [p.detach().clone() for p in trainer.zo_run.params]


@pytest.mark.parametrize("cache_z", [False, True])
def test_nan_loss_skips_update_params_unchanged(tmp_path, tiny_roberta_dir, caplog, cache_z):
    trainer = _zo_trainer(tmp_path, tiny_roberta_dir, max_steps=2, zo_cache_z=cache_z)
    forward = trainer.zo_forward
    calls = []

    def nan_on_step_2(model, inputs):  # both forwards of the second step are non-finite
        calls.append(1)
        loss = forward(model, inputs)
        return loss * float("nan") if len(calls) > 2 else loss

    snapshots = []

    class Snap(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            snapshots.append(_params(trainer))

    trainer.zo_forward = nan_on_step_2
    trainer.add_callback(Snap())
    trainer.train()
    after = _params(trainer)
    assert trainer.zo_run.skipped == 1 and trainer.zo_run.forwards == 4
    moved = max((a - b).abs().max().item() for a, b in zip(snapshots[1], snapshots[0]))
    assert moved > 1e-5  # a normal step does move theta
    # the skipped step leaves theta as it was, up to the float32 rounding of theta + eps z - 2 eps z + eps z
    for a, b in zip(after, snapshots[1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    assert "non-finite MeZO loss" in caplog.text


def test_skip_limit_semantics():
    assert skip_limit(100, 100_000) == 100
    assert skip_limit(0, 50) == 0
    assert skip_limit(0.01, 100_000) == 1000
    assert skip_limit(-1, 10) is None


def test_skip_threshold_stops_trainer(tmp_path, tiny_roberta_dir):
    trainer = _zo_trainer(tmp_path, tiny_roberta_dir, max_steps=6, zo_max_skipped_steps=2)
    forward = trainer.zo_forward
    trainer.zo_forward = lambda model, inputs: forward(model, inputs) * float("inf")
    with pytest.raises(TrainingDiverged, match="--zo_max_skipped_steps 2: 3 of the first 3"):
        trainer.train()


def test_skip_threshold_run_exits_3_log_untouched(tmp_path, data_dir, capsys, monkeypatch):
    forward = MezoTrainer.zo_forward
    monkeypatch.setattr(MezoTrainer, "zo_forward", lambda self, m, i: forward(self, m, i) * float("nan"))
    log = tmp_path / "log"
    log.write_bytes(LOG_BEFORE)
    argv = _argv(data_dir, tmp_path / "out", log, "--zero_order_optim", "--efficient_zero_order",
                 "--max_steps", "8", "--zo_max_skipped_steps", "0.25", "--optimizer", "sgd")
    assert run.main(argv) == 3
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Loading weights")]
    assert len(err) == 1 and err[0].startswith("error: --zo_max_skipped_steps 0.25: 3 of the first 3"), err
    assert log.read_bytes() == LOG_BEFORE


# ----- a finished run's record is never lost --------------------------------------------------------
def test_record_kept_next_to_outputs_when_the_log_breaks_during_the_run(tmp_path, data_dir, capsys, monkeypatch):
    """The log passes the checks before training, then turns into a folder: exit 4, record in output_dir."""
    log, out = tmp_path / "log", tmp_path / "out"
    log.write_bytes(LOG_BEFORE)

    def break_log(self, args, state, control, **kw):
        log.unlink()
        log.mkdir()
    monkeypatch.setattr(DataOrder, "on_train_end", break_log, raising=False)
    assert run.main(_argv(data_dir, out, log)) == 4
    captured = capsys.readouterr()
    err = [line for line in captured.err.strip().splitlines() if not line.startswith("Loading weights")]
    saved = out / results.RECORD_FILE
    assert err == [f"error: --log_file {log}: the record could not be appended (IsADirectoryError: Is a directory); "
                   f"it is saved in {saved} (add it with: cat {saved} >> {log})"]
    rec = json.loads(saved.read_text())
    # the same numbers as the metrics files the run wrote before
    dev = dict(line.split(" = ") for line in (out / "eval_results_uci-sentiment.txt").read_text().splitlines())
    test = dict(line.split(" = ") for line in (out / "test_results_uci-sentiment.txt").read_text().splitlines())
    assert rec["uci-sentiment_dev_eval_acc"] == float(dev["eval_acc"])
    assert rec["uci-sentiment_test_eval_acc"] == float(test["eval_acc"])
    assert rec["global_step"] == 2 and rec["task_name"] == "uci-sentiment"
    assert f"test: eval_loss={float(test['eval_loss']):.4f}" in captured.out


@pytest.mark.parametrize("template,segments", [
    ("*cls**sent_0*_It_was*mask*.*sep+*", 1),  # a trailing *sep+* starts no segment
    ("*cls**sent_0**sep+**sent_1**mask**sep+*", 2),
    ("*cls**sent_0**sep+*_*sent_1**sep+**mask**sep+*", 3),
    ("*cls**sent_0*_It_was*mask*.*sep+**sent_1*_It_was*label_0*.*sep+**sent_2*_It_was*label_1*.*sep+*", 3),
])
def test_template_segments_counted_by_hand(template, segments):
    assert run.template_segments(template) == segments
