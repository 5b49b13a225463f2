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

from src.errors import UsageError

logger = logging.getLogger("run")


def validate(model_args, data_args, training_args, task):
    """Everything that can be checked without loading a model; each failure names its flag or file."""
    from src import templates

    a = training_args
    if model_args.few_shot_type not in ("finetune", "prompt", "prompt-demo"):
        raise UsageError(f"--few_shot_type {model_args.few_shot_type!r}: expected finetune, prompt or prompt-demo")
    if not os.path.isdir(data_args.data_dir):
        raise UsageError(f"--data_dir {data_args.data_dir}: no such folder")
    splits = ["train"] * a.do_train + ["dev"] * (a.do_eval or a.evaluate_during_training) + ["test"] * a.do_predict
    for split in splits:
        path = task.split_path(data_args.data_dir, split)
        if not os.path.isfile(path):
            raise UsageError(f"--data_dir {data_args.data_dir}: missing split file {path}")
    if data_args.prompt:
        if not data_args.template:
            raise UsageError(f"--template: required with --few_shot_type {model_args.few_shot_type}")
        templates.validate_template(data_args.template, prompt=True)
        if not data_args.mapping:
            raise UsageError(f"--mapping: required with --few_shot_type {model_args.few_shot_type}")
        templates.parse_mapping(data_args.mapping)
    checks = [
        (a.per_device_train_batch_size >= 1, "--per_device_train_batch_size", a.per_device_train_batch_size, "must be >= 1"),
        (a.per_device_eval_batch_size >= 1, "--per_device_eval_batch_size", a.per_device_eval_batch_size, "must be >= 1"),
        (a.learning_rate >= 0 and np.isfinite(a.learning_rate), "--learning_rate", a.learning_rate, "must be a finite number >= 0"),
        (a.zero_order_eps > 0 and np.isfinite(a.zero_order_eps), "--zero_order_eps", a.zero_order_eps, "must be > 0"),
        (a.weight_decay >= 0, "--weight_decay", a.weight_decay, "must be >= 0"),
        (a.max_steps != 0, "--max_steps", a.max_steps, "must be > 0 (or -1 to use --num_train_epochs)"),
        (data_args.max_seq_length >= 4, "--max_seq_length", data_args.max_seq_length, "must be >= 4"),
        (data_args.num_sample >= 1, "--num_sample", data_args.num_sample, "must be >= 1"),
    ]
    for ok, flag, value, why in checks:
        if not ok:
            raise UsageError(f"{flag} {value}: {why}")
    if a.do_train and a.evaluate_during_training and not a.eval_steps:
        raise UsageError("--eval_steps: required with --evaluate_during_training")
    validate_run_control(a)
    if a.zero_order_optim and a.gradient_accumulation_steps != 1 and not a.zero_order_use_trainer_optim:
        raise UsageError(f"--gradient_accumulation_steps {a.gradient_accumulation_steps}: MeZO's direct update "
                         "takes one batch per step (use --zero_order_use_trainer_optim to accumulate)")
    if model_args.apply_lora and (not model_args.lora_r or not model_args.lora_alpha):
        raise UsageError("--apply_lora: needs --lora_r and --lora_alpha (the scripts use 8 and 16)")
    if a.prefix_init_by_real_act and not a.no_reparam:
        raise UsageError("--prefix_init_by_real_act: needs --no_reparam")
    if a.trainer not in ("standard", "linearhead"):
        raise UsageError(f"--trainer {a.trainer!r}: expected standard or linearhead (the kernel trainer is not implemented)")
    for flag in NOT_YET:
        if getattr(a, flag) not in (False, None, 0, "standard"):
            raise UsageError(f"--{flag} {getattr(a, flag)!r}: not implemented yet in this version")
    validate_ablations(a, task)


def validate_ablations(a, task):
    """MeZO ablation, momentum and linear-probing flags (src/zo_ablations.py, src/linearhead.py)."""
    def is_set(flag):
        return getattr(a, flag) not in (False, None, 0)
    zo_only = ("zero_order_use_trainer_optim", "zo_variant", "zo_by_layer", "optimize_acc", "layer_wise_optim",
               "max_zo_forward_steps", "zero_order_sample_scheduler", "zero_order_clip_grad", "scale_lr_with_samples")
    if not a.zero_order_optim:
        for flag in zo_only:
            if is_set(flag):
                raise UsageError(f"--{flag}: needs --zero_order_optim (it is a MeZO ablation)")
    if a.zero_order_sample < 1:
        raise UsageError(f"--zero_order_sample {a.zero_order_sample}: must be >= 1")
    if a.zero_order_sample > 1 and not (a.zero_order_optim and a.zero_order_use_trainer_optim):
        raise UsageError(f"--zero_order_sample {a.zero_order_sample}: n > 1 needs --zero_order_optim "
                         "--zero_order_use_trainer_optim (n-SPSA writes its estimate into .grad)")
    if a.zero_order_sample_scheduler not in (None, "constant", "linear"):
        raise UsageError(f"--zero_order_sample_scheduler {a.zero_order_sample_scheduler!r}: expected constant or linear")
    if a.zero_order_optim and not a.zero_order_use_trainer_optim:
        for flag in ("zero_order_sample_scheduler", "zero_order_clip_grad", "zo_by_layer"):
            if is_set(flag):
                raise UsageError(f"--{flag}: needs --zero_order_use_trainer_optim (the direct MeZO update "
                                 "takes one SPSA pair over all parameters per step)")
        if a.momentum:
            raise UsageError(f"--momentum {a.momentum}: the direct MeZO update has no momentum; add "
                             "--zero_order_use_trainer_optim --optimizer sgd for ZO-SGD with momentum")
    if a.zo_variant not in (None, "grad_norm", "param_norm"):
        raise UsageError(f"--zo_variant {a.zo_variant!r}: expected grad_norm or param_norm")
    if a.use_zo_grad_est and a.zo_variant != "grad_norm":
        raise UsageError("--use_zo_grad_est: needs --zo_variant grad_norm")
    for flag in ("recompute_norms", "scale_norm_by_num_params", "change_grad_estimate", "zo_variant_corrected"):
        if is_set(flag) and not a.zo_variant:
            raise UsageError(f"--{flag}: needs --zo_variant grad_norm or param_norm")
    if a.norm_running_update and not (a.zo_by_layer and a.zo_variant == "grad_norm"):
        raise UsageError("--norm_running_update: needs --zo_by_layer and --zo_variant grad_norm")
    if a.max_zo_forward_steps < 0:
        raise UsageError(f"--max_zo_forward_steps {a.max_zo_forward_steps}: must be >= 0 (0 = off)")
    if a.optimize_acc and task.output_mode == "regression":
        raise UsageError(f"--optimize_acc: task {task.name} is a regression task (no accuracy)")
    if not 0 <= a.momentum < 1:
        raise UsageError(f"--momentum {a.momentum}: must be in [0, 1)")
    if a.momentum and a.optimizer != "sgd":
        raise UsageError(f"--momentum {a.momentum}: needs --optimizer sgd (AdamW has its own betas)")
    probing = a.trainer == "linearhead" or a.from_linearhead
    for flag in ("prob_as_feature", "lp_early_stopping"):
        if is_set(flag) and not probing:
            raise UsageError(f"--{flag}: needs --trainer linearhead or --from_linearhead")
    if a.prob_as_feature and task.output_mode == "regression":
        raise UsageError(f"--prob_as_feature: task {task.name} is a regression task")


def validate_run_control(a):
    """Step counts, checkpoints and the MeZO skip limit (src/checkpoint.py, src/trainer.py)."""
    checks = [
        (a.max_steps > 0 or a.max_steps == -1, "--max_steps", a.max_steps,
         "must be > 0 (or -1 to use --num_train_epochs)"),
        (a.max_steps > 0 or a.num_train_epochs > 0, "--num_train_epochs", a.num_train_epochs, "must be > 0"),
        (a.eval_steps is None or a.eval_steps > 0, "--eval_steps", a.eval_steps, "must be > 0"),
        (a.gradient_accumulation_steps >= 1, "--gradient_accumulation_steps", a.gradient_accumulation_steps,
         "must be >= 1"),
        (a.save_steps >= 0, "--save_steps", a.save_steps, "must be >= 0 (0 = no checkpoints)"),
        (a.save_total_limit is None or a.save_total_limit >= 1, "--save_total_limit", a.save_total_limit,
         "must be >= 1"),
        (not np.isnan(a.zo_max_skipped_steps), "--zo_max_skipped_steps", a.zo_max_skipped_steps,
         "must be a number (negative = never stop)"),
    ]
    for ok, flag, value, why in checks:
        if not ok:
            raise UsageError(f"{flag} {value}: {why}")
    if a.resume_from_checkpoint and not a.do_train:
        raise UsageError(f"--resume_from_checkpoint {a.resume_from_checkpoint}: needs --do_train")


# Model types whose self-attention LoRA and prefix tuning know (src/lora.py, src/prefix.py).
PEFT_MODEL_TYPES = ("roberta", "bert", "xlm-roberta", "camembert")


def check_model_type(model_args, training_args):
    """--apply_lora / --prefix_tuning on a model they cannot handle: read the config, not the weights."""
    flags = [f for f, on in (("--apply_lora", model_args.apply_lora),
                             ("--prefix_tuning", training_args.prefix_tuning)) if on]
    if not flags:
        return
    from transformers import AutoConfig

    from src.models import load_pretrained
    config = load_pretrained(AutoConfig, model_args.config_name or model_args.model_name_or_path, model_args.cache_dir)
    if config.model_type not in PEFT_MODEL_TYPES:
        raise UsageError(f"{flags[0]}: model type {config.model_type!r} is not supported "
                         f"(supported: {', '.join(PEFT_MODEL_TYPES)})")


def resolve_resume(model_args, data_args, training_args):
    """--resume_from_checkpoint: `auto` -> newest checkpoint or None; a path must be a compatible checkpoint."""
    from src import checkpoint
    path = checkpoint.resolve(training_args.resume_from_checkpoint, training_args.output_dir)
    if path is not None:
        checkpoint.check_compatible(path, model_args, data_args, training_args)
    training_args.resume_from_checkpoint = path


# Ablation flags of the reference that this version parses but does not implement yet.
NOT_YET = ()


def setup(argv):
    from transformers import set_seed

    from src.arguments import parse_args
    from src.tasks import get_task

    model_args, data_args, training_args = parse_args(argv)
    data_args.task_name = data_args.task_name.lower()
    data_args._prompt = "prompt" in model_args.few_shot_type
    if training_args.no_train:
        training_args.do_train = False
    if training_args.no_predict:
        training_args.do_predict = False
    task = get_task(data_args.task_name)
    validate(model_args, data_args, training_args, task)
    if training_args.sweep:
        training_args.output_dir = os.path.join(training_args.output_dir, time.strftime("%Y%m%d-%H%M%S"))
    out = training_args.output_dir
    if (os.path.isdir(out) and os.listdir(out) and training_args.do_train
            and not training_args.overwrite_output_dir and not training_args.resume_from_checkpoint):
        raise UsageError(f"--output_dir {out}: exists and is not empty (pass --overwrite_output_dir)")
    check_model_type(model_args, training_args)
    resolve_resume(model_args, data_args, training_args)
    set_seed(training_args.seed)
    return model_args, data_args, training_args, task


def build_data(model_args, data_args, training_args, task, tokenizer):
    from src import data, templates

    prompt = data_args.prompt
    demo = model_args.few_shot_type == "prompt-demo"
    template = data_args.template
    if demo and data_args.auto_demo:
        template = templates.auto_demo_template(template, task.num_labels)
        logger.info("template with demonstrations: %s", template)
    word_ids = None
    if prompt:
        word_ids = templates.label_word_ids(tokenizer, templates.parse_mapping(data_args.mapping),
                                            task.label_list, task.output_mode)
        logger.info("label words: %s -> %s", data_args.mapping, word_ids)
    a = training_args
    wanted = {"train": a.do_train or a.trainer == "linearhead" or a.from_linearhead,
              "dev": a.do_eval or a.evaluate_during_training, "test": a.do_predict}
    train_examples = task.read_examples(data_args.data_dir, "train") if (wanted["train"] or demo) else None
    kw = {k: getattr(data_args, k) for k in ("max_seq_length", "first_sent_limit", "other_sent_limit",
                                             "truncate_head", "double_demo", "num_sample", "demo_filter",
                                             "demo_filter_rate", "demo_filter_model", "data_dir")}
    # Demonstrations: the original draws them from NumPy's global stream, seeded with --seed before
    # the datasets are built and again before training. So dev's demos and then test's come from
    # one stream (test continues where dev stopped), and training draws from a fresh one.
    streams = {"train": training_args.seed, "dev": np.random.RandomState(training_args.seed)}
    streams["test"] = streams["dev"]
    sets = {}
    for split, on in wanted.items():
        if on:
            examples = train_examples if split == "train" else task.read_examples(data_args.data_dir, split)
            sets[split] = data.build_dataset(split, examples, train_examples, tokenizer, task=task,
                                             template=template, label_word_ids=word_ids, prompt=prompt,
                                             demo=demo, seed=streams[split], **kw)
    return sets, word_ids


def metric_fn(task):
    from src.data import average_over_samples

    def compute(pred, num_sample):
        logits, labels = average_over_samples(pred.predictions, pred.label_ids, num_sample)
        preds = logits if task.output_mode == "regression" else logits.argmax(-1)
        return task.compute_metrics(preds, labels)
    return compute


def main(argv=None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("transformers", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return run(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from src.embedded import ModelSourceError
        if isinstance(e, ModelSourceError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        from src.trainer import TrainingDiverged
        if isinstance(e, TrainingDiverged):  # a failed run: no record in the log
            print(f"error: {e}", file=sys.stderr)
            return 3
        raise


def run(argv=None) -> int:
    start = time.time()
    model_args, data_args, training_args, task = setup(argv)

    from src import models, peft, results
    from src.data import Collator
    from src.tasks import dev_objective
    from src.trainer import MezoTrainer, StartupClock

    tokenizer = models.load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path,
                                      model_args.cache_dir)
    datasets, word_ids = build_data(model_args, data_args, training_args, task, tokenizer)
    model = models.build_model(model_args, training_args, task, word_ids, data_args.prompt)
    peft.apply(model, model_args, training_args)
    models.set_trainable(model, model_args, training_args)
    n_trainable = models.count_trainable(model)
    print(f"trainable parameters: {n_trainable:,} of {sum(p.numel() for p in model.parameters()):,}")

    compute = metric_fn(task)
    num_sample = datasets["dev"].num_sample if "dev" in datasets else 1
    trainer = MezoTrainer(
        model=model, args=training_args, train_dataset=datasets.get("train"),
        eval_dataset=datasets.get("dev"),
        data_collator=Collator(tokenizer.pad_token_id, getattr(tokenizer, "pad_token_type_id", 0)),
        compute_metrics=lambda p: compute(p, num_sample), dev_objective=dev_objective)
    startup = StartupClock()
    trainer.add_callback(startup)

    summary = {}
    if training_args.trainer == "linearhead" or training_args.from_linearhead:
        from src.linearhead import fit_linear_head
        summary.update(fit_linear_head(trainer, model, datasets.get("train"), task, training_args) or {})
    train_start = time.time()
    if training_args.do_train and training_args.trainer != "linearhead":
        trainer.run_arg_groups = (model_args, data_args, training_args)  # fingerprint in checkpoints
        out = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        summary["train_loss"] = out.training_loss
        trainer.restore_best()
        summary.update(trainer.train_summary())
        summary["train_steps_per_s"] = summary["global_step"] / max(time.time() - train_start, 1e-9)
        summary["startup_s"] = startup.seconds   # process start -> first training step
    if training_args.save_at_last and trainer.is_world_process_zero():
        save_trainable(model, training_args.output_dir)
    if training_args.save_model and trainer.is_world_process_zero():
        from src import export
        print(f"model saved to {export.save(model, tokenizer, datasets, task, model_args, data_args, training_args)}")

    dev_metrics = test_metrics = None
    if "dev" in datasets:
        dev_metrics = trainer.evaluate(datasets["dev"])
    if "test" in datasets:
        num_sample = datasets["test"].num_sample
        test_metrics = trainer.evaluate(datasets["test"])
        if training_args.save_logit:
            save_logits(trainer, datasets["test"], data_args, training_args)
    write_metrics_files(training_args.output_dir, task.name, dev_metrics, test_metrics,
                        trainer.is_world_process_zero())
    summary.update(wall_time_s=time.time() - start, trainable_params=n_trainable, world_size=training_args.world_size,
                   peak_memory_bytes=results.peak_memory_bytes(training_args.device))
    if trainer.is_world_process_zero():
        record = results.make_record(task.name, training_args.output_dir, dev_metrics, test_metrics,
                                     (model_args, training_args, data_args), summary)
        results.append_record(training_args.log_file, record)
        for name, m in (("dev", dev_metrics), ("test", test_metrics)):
            if m:
                print(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float)))
    return 0


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
    from src.data import average_over_samples
    pred = trainer.predict(dataset)
    logits, _ = average_over_samples(pred.predictions, pred.label_ids, dataset.num_sample)
    folder = training_args.save_logit_dir or training_args.output_dir
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, f"{data_args.task_name}-{training_args.model_id}-{training_args.array_id}.npy"),
            logits)


if __name__ == "__main__":
    sys.exit(main())
