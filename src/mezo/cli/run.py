"""Prompt-based fine-tuning of a masked LM with back-propagation (Adam) or MeZO; one run, one log record.

    python run.py --model_name_or_path splade-tiny --task_name uci-sentiment \
        --data_dir data/k-shot-1k-test/uci-sentiment/16-42 --few_shot_type prompt \
        --template '*cls**sent_0*_It_was*mask*.*sep+*' --mapping "{0:'terrible',1:'great'}" \
        --output_dir result/demo --do_train --do_eval --do_predict --max_steps 100 ...

Flow: arguments → checks (before any model is loaded) → tokenizer, label words, datasets →
model (+ LoRA / prefix surgery, freezing) → Trainer (Adam or MeZO) → best-dev weights →
dev and test evaluation → one JSON record appended to --log_file.
"""
import logging
import os
import sys
import time

import numpy as np

from mezo.errors import RunError, UsageError, one_line
from mezo.models.families import PEFT_MODEL_TYPES, ROBERTA_TYPES

logger = logging.getLogger("run")


def validate(model_args, data_args, training_args, adapter_args, task):
    """What needs the task or the file system, before any model loads; each failure names its flag or file.

    Returns the run's PromptSpec (building it checks the template and the mapping)."""
    from mezo.data.prompt import PromptSpec

    a = training_args
    if not os.path.isdir(data_args.data_dir):
        raise UsageError(f"--data_dir {data_args.data_dir}: no such folder")
    splits = ["train"] * a.do_train + ["dev"] * (a.do_eval or a.evaluate_during_training) + ["test"] * a.do_predict
    for split in splits:
        path = task.split_path(data_args.data_dir, split)
        if not os.path.isfile(path):
            raise UsageError(f"--data_dir {data_args.data_dir}: missing split file {path}")
    spec = PromptSpec.from_args(model_args, data_args, task)
    # Flag values and combinations are checked by the argument dataclasses (mezo.config.arguments);
    # what needs the task is checked here.
    if a.optimize_acc and task.output_mode == "regression":
        raise UsageError(f"--optimize_acc: task {task.name} is a regression task (no accuracy)")
    if a.prob_as_feature and task.output_mode == "regression":
        raise UsageError(f"--prob_as_feature: task {task.name} is a regression task")
    return spec


def usable_positions(config):
    """How many tokens the model's position table can encode (None if the config does not say)."""
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if config.model_type in ROBERTA_TYPES:   # position ids start after the padding index
        n -= (getattr(config, "pad_token_id", None) or 0) + 1
    return n


def template_segments(template) -> int:
    """How many token-type ids a prompt template can emit: one, plus one per *sep+* with tokens after it."""
    from mezo.data import templates
    pieces = templates.validate_template(template, prompt=True)
    seps = [i for i, p in enumerate(pieces) if p.kind == "special" and p.value == "sep+"]
    return 1 + sum(any(not (q.kind == "literal" and not q.value) for q in pieces[i + 1:]) for i in seps)


def check_segments(model_args, spec, config):
    """BERT-style models embed the template's segment ids: they must fit the token-type table
    (demonstration templates have one segment per demonstration; with prompt-demo the table is
    enlarged to models.DEMO_SEGMENTS rows, as the original did)."""
    table = getattr(config, "type_vocab_size", None)
    if not spec.prompt or config.model_type in ROBERTA_TYPES or not isinstance(table, int):
        return
    from mezo.models.prompt_mlm import DEMO_SEGMENTS
    if spec.demo:
        table = max(table, DEMO_SEGMENTS)
    template = spec.rendered_template
    n = template_segments(template)
    if n > table:
        raise UsageError(f"--template {spec.template!r}: {n} segments (one per *sep+*"
                         f"{', with demonstrations' if template != spec.template else ''}) but "
                         f"{model_args.model_name_or_path} ({config.model_type}) has {table} token types")


def check_model(model_args, adapter_args, spec):
    """Model-dependent checks: read the config (not the weights) and check types and lengths against it."""
    from transformers import AutoConfig

    from mezo.models.prompt_mlm import load_pretrained
    config = load_pretrained(AutoConfig, model_args.config_name or model_args.model_name_or_path, model_args.cache_dir)
    flags = [f for f, on in (("--apply_lora", adapter_args.apply_lora),
                             ("--prefix_tuning", adapter_args.prefix_tuning)) if on]
    if flags and config.model_type not in PEFT_MODEL_TYPES:
        raise UsageError(f"{flags[0]}: model type {config.model_type!r} is not supported "
                         f"(supported: {', '.join(PEFT_MODEL_TYPES)})")
    limit = usable_positions(config)
    if limit is not None:
        length = spec.max_length
        if length > limit:
            what = f"{length} tokens (doubled by --double_demo)" if length != spec.max_seq_length else f"{length} tokens"
            raise UsageError(f"--max_seq_length {spec.max_seq_length}: {what} exceed the {limit} positions of "
                             f"{model_args.model_name_or_path} ({config.model_type})")
        # Prefixes are extra attention keys, not input tokens: only their initialisation from real
        # activations runs num_prefix tokens through the model.
        a = adapter_args
        if a.prefix_tuning and a.prefix_init_by_real_act and a.num_prefix > limit:
            raise UsageError(f"--num_prefix {a.num_prefix}: --prefix_init_by_real_act runs that many tokens "
                             f"through a model with {limit} positions")
    check_segments(model_args, spec, config)


def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _probe_writable(folder):
    """Create and delete a file in `folder`: the only test that also holds for root and read-only mounts."""
    import tempfile
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def check_folder(flag, path, shown=None):
    """`path` is a writable folder, or can be created as one (`shown`: the flag's value, if not `path`)."""
    if not path:
        raise UsageError(f"{flag} '': an empty path")
    shown = shown or path
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {shown}: {'exists and is not a folder' if shown == path else f'{path} is a file'}")
    base = _nearest_existing(path)
    if not os.path.isdir(base):
        raise UsageError(f"{flag} {shown}: cannot be created, {base} is a file")
    why = _probe_writable(base)
    if why:
        raise UsageError(f"{flag} {shown}: not writable ({base}: {why})")


def check_file(flag, path):
    """`path` is a file that can be appended to (or created), and its folder takes a lock file."""
    if not path:
        raise UsageError(f"{flag} '': an empty path")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a folder, expected a file")
    if os.path.isdir(path + ".lock"):
        raise UsageError(f"{flag} {path}: its lock file {path}.lock is a folder")
    check_folder(flag, os.path.dirname(os.path.abspath(path)), shown=path)
    if os.path.exists(path):
        try:
            with open(path, "ab"):  # opened for appending, nothing written: the file is unchanged
                pass
        except OSError as e:
            raise UsageError(f"{flag} {path}: cannot be appended to ({e.strerror or e})") from None


def check_paths(model_args, data_args, training_args):
    """Every path the run will write, before anything is loaded: right kind, creatable, writable."""
    a = training_args
    check_file("--log_file", a.log_file)
    check_folder("--output_dir", a.output_dir)  # metrics files, --save_at_last, checkpoints
    if a.save_logit and a.save_logit_dir:
        check_folder("--save_logit_dir", a.save_logit_dir)
    if model_args.cache_dir:
        check_folder("--cache_dir", model_args.cache_dir)
    for name in (os.listdir(a.output_dir) if os.path.isdir(a.output_dir) and a.save_steps > 0 else ()):
        if name.startswith("checkpoint-") and not os.path.isdir(os.path.join(a.output_dir, name)):
            raise UsageError(f"--output_dir {a.output_dir}: {name} is a file where checkpoints go")


def resolve_resume(model_args, data_args, training_args, adapter_args):
    """--resume_from_checkpoint: `auto` -> newest checkpoint or None; a path must be a compatible checkpoint."""
    from mezo.training import checkpoint
    path = checkpoint.resolve(training_args.resume_from_checkpoint, training_args.output_dir)
    if path is not None:
        checkpoint.check_compatible(path, model_args, data_args, training_args, adapter_args)
    return path


def setup(argv):
    from transformers import set_seed

    from mezo.config.arguments import parse_args
    from mezo.data.tasks import get_task

    model_args, data_args, training_args, adapter_args = parse_args(argv)
    task = get_task(data_args.task_name)
    spec = validate(model_args, data_args, training_args, adapter_args, task)
    out = training_args.output_dir
    if (os.path.isdir(out) and os.listdir(out) and training_args.do_train
            and not training_args.overwrite_output_dir and not training_args.resume_from_checkpoint):
        raise UsageError(f"--output_dir {out}: exists and is not empty (pass --overwrite_output_dir)")
    check_paths(model_args, data_args, training_args)
    resume = resolve_resume(model_args, data_args, training_args, adapter_args)
    check_model(model_args, adapter_args, spec)
    set_seed(training_args.seed)
    return model_args, data_args, training_args, adapter_args, task, spec, resume


def build_data(spec, data_args, training_args, task, tokenizer):
    """The datasets a run needs, rendered as ``spec`` says; returns them and the spec with label-word ids."""
    from mezo.data import datasets as data
    from mezo.data.tasks import check_k_shot

    demo = spec.demo
    if demo and spec.rendered_template != spec.template:
        logger.info("template with demonstrations: %s", spec.rendered_template)
    spec = spec.with_tokenizer(tokenizer)
    if spec.prompt:
        logger.info("label words: %s -> %s", spec.mapping, list(spec.label_word_ids))
    a = training_args
    wanted = {"train": a.do_train or a.trainer == "linearhead" or a.from_linearhead,
              "dev": a.do_eval or a.evaluate_during_training, "test": a.do_predict}
    train_examples = task.read_examples(data_args.data_dir, "train") if (wanted["train"] or demo) else None
    if train_examples is not None:
        check_k_shot(task, train_examples, data_args.num_k, task.split_path(data_args.data_dir, "train"))
    # Demonstrations: the original draws them from NumPy's global stream, seeded with --seed before
    # the datasets are built and again before training. So dev's demos and then test's come from
    # one stream (test continues where dev stopped), and training draws from a fresh one.
    streams = {"train": training_args.seed, "dev": np.random.RandomState(training_args.seed)}
    streams["test"] = streams["dev"]
    sets = {}
    for split, on in wanted.items():
        if on:
            examples = train_examples if split == "train" else task.read_examples(data_args.data_dir, split)
            sets[split] = data.build_dataset(split, examples, train_examples, tokenizer, task=task, spec=spec,
                                             data_dir=data_args.data_dir, seed=streams[split])
    return sets, spec


class SampledMetrics:
    """compute_metrics for the Trainer: logits averaged over the evaluated split's `num_sample` demo
    resamplings (set before each evaluation), then the task's metrics."""

    def __init__(self, task, num_sample=1):
        self.task, self.num_sample = task, num_sample

    def __call__(self, pred):
        from mezo.data.datasets import average_over_samples
        logits, labels = average_over_samples(pred.predictions, pred.label_ids, self.num_sample)
        preds = logits if self.task.output_mode == "regression" else logits.argmax(-1)
        return self.task.compute_metrics(preds, labels)


def main(argv=None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("transformers", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return run(argv)
    except RunError as e:  # bad input (2), diverged (3), record kept elsewhere (4), preempted (128 + signal)
        print(f"error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside training (or without checkpoints): no record
        print("error: interrupted (SIGINT); no record written", file=sys.stderr)
        return 128 + 2
    finally:
        from mezo.training import distributed
        distributed.shutdown()   # several processes: leave the process group before exiting


def run(argv=None) -> int:
    start = time.time()
    model_args, data_args, training_args, adapter_args, task, spec, resume = setup(argv)
    trainer, datasets, tokenizer, spec = build_trainer(model_args, data_args, training_args, adapter_args, task, spec)
    summary = train(trainer, datasets, tokenizer, task, spec, resume, model_args, data_args, training_args,
                    adapter_args)
    finish(trainer, datasets, task, summary, start, model_args, data_args, training_args, adapter_args)
    return 0


def build_trainer(model_args, data_args, training_args, adapter_args, task, spec):
    """Tokenizer, datasets, model (with LoRA / prefix surgery and freezing) and the Trainer."""
    from mezo.models import prompt_mlm as models
    from mezo.models import adapters as peft
    from mezo.data.datasets import Collator
    from mezo.data.tasks import dev_objective
    from mezo.training.trainer import MezoTrainer

    tokenizer = models.load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path,
                                      model_args.cache_dir)
    datasets, spec = build_data(spec, data_args, training_args, task, tokenizer)
    model = models.build_model(model_args, training_args, task, spec)
    peft.apply(model, adapter_args)
    models.set_trainable(model, adapter_args)
    print(f"trainable parameters: {models.count_trainable(model):,} of {sum(p.numel() for p in model.parameters()):,}")
    trainer = MezoTrainer(
        model=model, args=training_args, train_dataset=datasets.get("train"), eval_dataset=datasets.get("dev"),
        data_collator=Collator(tokenizer.pad_token_id, getattr(tokenizer, "pad_token_type_id", 0)),
        compute_metrics=SampledMetrics(task), dev_objective=dev_objective,
        arg_groups=(model_args, data_args, training_args, adapter_args))   # the run's fingerprint in checkpoints
    return trainer, datasets, tokenizer, spec


def train(trainer, datasets, tokenizer, task, spec, resume, model_args, data_args, training_args, adapter_args) -> dict:
    """Linear probe and/or training (best-dev weights restored), saving what was asked; the summary."""
    from mezo.models import prompt_mlm as models
    from mezo.training.callbacks import StartupClock

    model, a = trainer.model, training_args
    trainer.compute_metrics.num_sample = datasets["dev"].num_sample if "dev" in datasets else 1
    startup = StartupClock()
    trainer.add_callback(startup)
    summary = {"trainable_params": models.count_trainable(model)}
    if a.trainer == "linearhead" or a.from_linearhead:
        from mezo.training.linearhead import fit_linear_head
        summary.update(fit_linear_head(trainer, model, datasets.get("train"), task, a) or {})
    train_start = time.time()
    if a.do_train and a.trainer != "linearhead":
        out = trainer.train(resume_from_checkpoint=resume)
        summary["train_loss"] = out.training_loss
        trainer.restore_best()
        summary.update(trainer.train_summary())
        summary["train_steps_per_s"] = summary["global_step"] / max(time.time() - train_start, 1e-9)
        summary["startup_s"] = startup.seconds   # process start -> first training step
    if a.save_at_last and trainer.is_world_process_zero():
        save_trainable(model, a.output_dir)
    if a.save_model and trainer.is_world_process_zero():
        from mezo.models import export
        print(f"model saved to {export.save(model, tokenizer, datasets, task, spec, model_args, data_args, a, adapter_args)}")
    return summary


def finish(trainer, datasets, task, summary, start, model_args, data_args, training_args, adapter_args) -> None:
    """Dev and test evaluation, metric files, and the record appended to --log_file (never lost)."""
    from mezo.experiments import results

    dev_metrics = test_metrics = None
    if "dev" in datasets:
        dev_metrics = trainer.evaluate(datasets["dev"])
    if "test" in datasets:
        trainer.compute_metrics.num_sample = datasets["test"].num_sample
        test_metrics = trainer.evaluate(datasets["test"])
        if training_args.save_logit:
            save_logits(trainer, datasets["test"], data_args, training_args)
    write_metrics_files(training_args.output_dir, task.name, dev_metrics, test_metrics,
                        trainer.is_world_process_zero())
    summary.update(wall_time_s=time.time() - start, world_size=training_args.world_size,
                   peak_memory_bytes=results.peak_memory_bytes(training_args.device))
    if trainer.is_world_process_zero():
        record = results.make_record(task.name, training_args.output_dir, dev_metrics, test_metrics,
                                     (model_args, training_args, data_args, adapter_args), summary)
        for name, m in (("dev", dev_metrics), ("test", test_metrics)):
            if m:
                print(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float)))
        results.save_record(training_args.log_file, record, training_args.output_dir)  # never lost


def write_metrics_files(output_dir, task_name, dev, test, is_main):
    if not is_main:
        return
    os.makedirs(output_dir, exist_ok=True)
    for fname, metrics in ((f"eval_results_{task_name}.txt", dev), (f"test_results_{task_name}.txt", test)):
        if metrics:
            with open(os.path.join(output_dir, fname), "w") as f:
                f.writelines(f"{k} = {v}\n" for k, v in metrics.items())


def save_trainable(model, output_dir):
    import torch
    os.makedirs(output_dir, exist_ok=True)
    state = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    torch.save(state, os.path.join(output_dir, "trainable_weights.pt"))


def save_logits(trainer, dataset, data_args, training_args):
    from mezo.data.datasets import average_over_samples
    pred = trainer.predict(dataset)
    logits, _ = average_over_samples(pred.predictions, pred.label_ids, dataset.num_sample)
    folder = training_args.save_logit_dir or training_args.output_dir
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, f"{data_args.task_name}-{training_args.model_id}-{training_args.array_id}.npy"),
            logits)


if __name__ == "__main__":
    sys.exit(main())
