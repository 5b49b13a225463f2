"""Offline stand-ins: a byte-level BPE RoBERTa tokenizer trained here, tiny random models.

Everything is deterministic (BPE training on a fixed corpus, models from a fixed torch seed),
so tests may assert exact token ids.
"""
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the checkout

CORPUS = [
    "It was great. It was terrible. It was good. It was bad. It was okay.",
    "a gorgeous film . The cat sat. A cat is sitting. Yes No Maybe",
    "This is correct. This is incorrect. This is subjective. This is objective.",
    "types: Description Entity Expression Human Location Number : ? , .",
    "What is the capital of France? the movie was fun and the acting was dull.",
]
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def build_roberta_tokenizer(out_dir: str):
    """Train a 500-token byte-level BPE and save it as a RobertaTokenizer folder."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer, RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 20, vocab_size=500, min_frequency=1,
                            special_tokens=SPECIALS, show_progress=False)
    raw = os.path.join(out_dir, "bpe")
    os.makedirs(raw, exist_ok=True)
    bpe.save_model(raw)
    tok = RobertaTokenizer(vocab=os.path.join(raw, "vocab.json"),
                           merges=os.path.join(raw, "merges.txt"))
    tok.save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)


def build_tiny_roberta(out_dir: str, seed: int = 0, **config_overrides):
    """Random 2-layer RobertaForMaskedLM (hidden 32) saved with the BPE tokenizer."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    tok = build_roberta_tokenizer(out_dir)
    kw = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=37, max_position_embeddings=260, pad_token_id=1,
              bos_token_id=0, eos_token_id=2, type_vocab_size=1)
    kw.update(config_overrides)
    torch.manual_seed(seed)
    model = RobertaForMaskedLM(RobertaConfig(**kw))
    model.save_pretrained(out_dir)
    return out_dir


def build_tiny_bert(out_dir: str, seed: int = 0, **config_overrides):
    """Random 2-layer BertForMaskedLM (hidden 32) with the embedded model's WordPiece vocab."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from mezo.models.embedded import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    tok.save_pretrained(out_dir)
    kw = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=37, max_position_embeddings=256)
    kw.update(config_overrides)
    torch.manual_seed(seed)
    BertForMaskedLM(BertConfig(**kw)).save_pretrained(out_dir)
    return out_dir


def small_uci_split(dst, test_rows=40):
    """The committed uci-sentiment 16-42 split in `dst`, with the test set cut to `test_rows` sentences."""
    import shutil
    src = os.path.join(ROOT, "data/k-shot-1k-test/uci-sentiment/16-42")
    os.makedirs(dst, exist_ok=True)
    for name in ("train.csv", "dev.csv"):
        shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    with open(os.path.join(src, "test.csv")) as f:
        lines = f.readlines()[:test_rows]
    with open(os.path.join(dst, "test.csv"), "w") as f:
        f.write("".join(lines))
    return str(dst)


def mask_dataset(n=12, seed=0):
    """Random token sequences (ids 5..299, lengths 5-7) with <mask> (id 4) at position 2, labels 0/1."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        length = 5 + i % 3
        ids = torch.randint(5, 300, (length,), generator=g).tolist()
        ids[2] = 4
        items.append({"input_ids": ids, "attention_mask": [1] * length, "mask_pos": 2, "label": i % 2})
    return items


SENT_TEMPLATE = "*cls**sent_0*_It_was*mask*.*sep+*"
SENT_MAPPING = "{0:'terrible',1:'great'}"


def checkpointed_run_argv(model_dir, data_dir, out, log, kind, steps, *extra):
    """run.py flags of a small run that checkpoints every 3 steps and evaluates every 4 (kind: mezo or
    adam; Adam runs with dropout, so the torch RNG state matters too): the resume and preemption tests."""
    a = ["--model_name_or_path", model_dir, "--task_name", "uci-sentiment", "--data_dir", data_dir,
         "--few_shot_type", "prompt", "--template", SENT_TEMPLATE, "--mapping", SENT_MAPPING, "--first_sent_limit", "40",
         "--output_dir", str(out), "--log_file", str(log), "--do_train", "--do_eval", "--do_predict",
         "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--seed", "42",
         "--max_steps", str(steps), "--evaluate_during_training", "--eval_steps", "4", "--logging_steps", "2",
         "--save_steps", "3", "--save_at_last", "--disable_tqdm", "true", "--lr_scheduler_type", "linear"]
    if kind == "mezo":
        a += ["--zero_order_optim", "--efficient_zero_order", "--optimizer", "sgd", "--learning_rate", "1e-2"]
    else:
        a += ["--learning_rate", "1e-3"]
    return a + list(extra)


def resume_and_compare(ref, out, log, argv):
    """Resume a stopped run (`argv` + `--resume_from_checkpoint auto`) and check that its final
    trainable weights and record equal the uninterrupted run's `ref` (timing and path fields aside)."""
    import json

    import torch

    from mezo.cli import run
    from mezo.experiments.results import VOLATILE_FIELDS
    assert run.main(list(argv) + ["--resume_from_checkpoint", "auto"]) == 0
    weights = torch.load(out / "trainable_weights.pt", weights_only=True)
    assert weights.keys() == ref["weights"].keys()
    assert all(torch.equal(weights[k], ref["weights"][k]) for k in weights), "parameters differ"
    rec, = [json.loads(line) for line in log.read_text().splitlines()]
    differ = {k for k in set(rec) | set(ref["record"]) if rec.get(k) != ref["record"].get(k)}
    differ = {k for k in differ if not k.endswith(("_runtime", "_per_second"))}
    assert differ <= VOLATILE_FIELDS, sorted(differ - VOLATILE_FIELDS)
    for key in ("uci-sentiment_dev_eval_acc", "uci-sentiment_test_eval_acc", "uci-sentiment_test_eval_loss",
                "train_loss", "dev_curve", "best_dev_step", "global_step", "train_loss_curve"):
        assert key in rec and rec[key] == ref["record"][key], key
    return rec


# ----------------------------------------------------------------------------- zeroth-order optimizers
def zo_build(name, params, **kw):
    """A zeroth-order optimizer of mezo.zo by name, lr 0 until zo_step sets it."""
    from mezo.zo.methods import build
    return build(name, params, **{"lr": 0.0, **kw})


def zo_step(opt, closure, seed, lr):
    """One step with this seed and learning rate (every group); returns the ZOStep."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step(closure, seed=seed)
    return opt.last


# ----------------------------------------------------------------------------- models and trainers
def prompt_model(path, dropout=None, words=(10, 20), **kw):
    """A PromptMLM (2 labels, label words `words`) over the tiny masked LM saved at `path`;
    `dropout` overrides both dropout probabilities of its config."""
    from transformers import AutoModelForMaskedLM

    from mezo.models.prompt_mlm import PromptMLM
    over = {} if dropout is None else dict(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return PromptMLM(AutoModelForMaskedLM.from_pretrained(path, **over), 2, list(words), **kw)


# What the suite's trainers share: CPU, seed 3, every step logged, nothing reported or drawn.
TRAINER_ARGS = dict(per_device_train_batch_size=4, per_device_eval_batch_size=8, learning_rate=1e-3, max_steps=3,
                    logging_steps=1, seed=3, disable_tqdm=True, use_cpu=True, report_to="none")
# MeZO on the direct path, the step of mezo.sh
MEZO_ARGS = dict(zero_order_optim=True, efficient_zero_order=True, zero_order_eps=1e-3, optimizer="sgd")


def trainer(tmp_path, model, *, zo=True, cls=None, train_dataset=None, eval_dataset=None, compute_metrics=None,
            dev_objective=None, **args):
    """A MezoTrainer over `model` with TRAINER_ARGS (and MEZO_ARGS when `zo`), overridden by `args`;
    trains on `mask_dataset()` unless given another dataset; collates with pad id 1."""
    from mezo.config.arguments import MezoTrainingArguments
    from mezo.data.datasets import Collator
    from mezo.training.trainer import MezoTrainer
    targs = MezoTrainingArguments(**{"output_dir": str(tmp_path / "out"), **TRAINER_ARGS,
                                     **(MEZO_ARGS if zo else {}), **args})
    return (cls or MezoTrainer)(
        model=model, args=targs, train_dataset=mask_dataset() if train_dataset is None else train_dataset,
        eval_dataset=eval_dataset, data_collator=Collator(1), compute_metrics=compute_metrics,
        dev_objective=dev_objective or (lambda m: m.get("eval_acc", 0.0)))
