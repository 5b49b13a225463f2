"""The allowed range of every numeric flag: one table, checked before anything is loaded, shown in --help.

`RANGES` maps a field of the four argument groups (``mezo.config.arguments``) to (test, wording); the
methods' hyper-parameters come with their ranges from their declarations (``mezo.zo.hparams``). The
wording is appended to the flag's --help text (`annotate`) and quoted in the one-line error, so
the help and the check cannot disagree; each dataclass's `__post_init__` calls `check`. `NO_RANGE` lists, with the reason, the fields of the
project's own groups that need no numeric range (switches, choices checked elsewhere, paths
checked by run.check_paths, flags refused by ``mezo.config.legacy``); tests/config/test_fuzz.py asserts that
every field is in exactly one of the two. Inherited TrainingArguments fields outside RANGES are
left to TrainingArguments' own checks. Model-dependent limits (sequence length against the
model's position table) are checked in run.check_model, after the config and before the weights.
"""
import math

from mezo.config.legacy import (LegacyDataArguments, LegacyModelArguments, LegacyTrainingArguments,
                                refused_fields)
from mezo.config.zo import method_hparams
from mezo.errors import UsageError

SEED_MAX = 2**32 - 1  # numpy's RandomState (the MeZO seed stream, set_seed) takes 0 <= seed < 2**32


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _finite(v):
    return _num(v) and math.isfinite(v)


def at_least(lo, optional=False):
    return lambda v: (optional and v is None) or (_finite(v) and v >= lo)


def between(lo, hi, lo_open=False, hi_open=False, optional=False):
    def ok(v):
        if optional and v is None:
            return True
        return _finite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return ok


RANGES = {
    # model
    "lora_r": (at_least(1, optional=True), "an integer >= 1"),
    "lora_alpha": (at_least(1, optional=True), "an integer >= 1"),
    # data
    "max_seq_length": (at_least(4), "an integer >= 4, and at most the model's position limit (doubled "
                       "with --double_demo)"),
    "num_k": (at_least(1), "an integer >= 1"),
    "num_sample": (at_least(1), "an integer >= 1"),
    "demo_filter_rate": (between(0, 1, lo_open=True), "a number in (0, 1]"),
    "first_sent_limit": (at_least(1, optional=True), "an integer >= 1"),
    "other_sent_limit": (at_least(1, optional=True), "an integer >= 1"),
    # training: seeds
    "seed": (between(0, SEED_MAX), f"an integer in [0, {SEED_MAX}]"),
    "data_seed": (between(0, SEED_MAX, optional=True), f"an integer in [0, {SEED_MAX}]"),
    # training: optimisation
    "learning_rate": (at_least(0), "a finite number >= 0"),
    "weight_decay": (at_least(0), "a finite number >= 0"),
    "momentum": (between(0, 1, hi_open=True), "a number in [0, 1)"),
    "adam_beta1": (between(0, 1, hi_open=True), "a number in [0, 1)"),
    "adam_beta2": (between(0, 1, hi_open=True), "a number in [0, 1)"),
    "adam_epsilon": (at_least(0), "a finite number >= 0"),
    "max_grad_norm": (_num, "a number (<= 0: no clipping)"),
    "warmup_steps": (at_least(0), "a number >= 0"),
    "label_smoothing_factor": (between(0, 1, hi_open=True), "a number in [0, 1)"),
    "zero_order_eps": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "zo_max_skipped_steps": (_num, "a number (>= 1: a count; in (0, 1): a fraction of max_steps; < 0: never stop)"),
    "zo_check_sync_steps": (at_least(0), "an integer >= 0 (0 = off)"),
    "zero_order_sample": (at_least(1), "an integer >= 1"),
    "max_zo_forward_steps": (at_least(0), "an integer >= 0 (0 = off)"),
    "num_prefix": (at_least(1), "an integer >= 1"),
    # training: steps and batches
    "max_steps": (lambda v: _num(v) and (v > 0 or v == -1), "an integer > 0, or -1 to use --num_train_epochs"),
    "num_train_epochs": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "per_device_train_batch_size": (at_least(1), "an integer >= 1"),
    "per_device_eval_batch_size": (at_least(1), "an integer >= 1"),
    "gradient_accumulation_steps": (at_least(1), "an integer >= 1"),
    "logging_steps": (lambda v: _finite(v) and v > 0, "a number > 0"),
    "eval_steps": (lambda v: v is None or (_finite(v) and v > 0), "a number > 0"),
    "save_steps": (at_least(0), "a number >= 0 (0 = no checkpoints)"),
    "save_total_limit": (at_least(1, optional=True), "an integer >= 1"),
    "dataloader_num_workers": (at_least(0), "an integer >= 0"),
}
# The methods' own hyper-parameters: the range each method declares next to its code (mezo.zo.hparams).
RANGES.update({name: (hp.ok, hp.wording) for name, hp in method_hparams().items() if not hp.choices})

# Fields of ModelArguments, DataArguments and MezoTrainingArguments' own block without a numeric range.
NO_RANGE = {
    "paths (run.check_paths / the loaders)": (
        "model_name_or_path", "config_name", "tokenizer_name", "cache_dir", "data_dir", "log_file",
        "save_logit_dir", "demo_filter_model"),
    "choices or syntax checked in __post_init__, run.validate or mezo.data.templates": (
        "few_shot_type", "task_name", "template", "mapping", "optimizer", "trainer",
        "zero_order_sample_scheduler", "zo_variant", "lr_scheduler_type", "zo_method"),
    "switches": (
        "l2_loss", "apply_lora", "lora_freeze_head", "overwrite_cache", "auto_demo", "demo_filter",
        "double_demo", "truncate_head", "evaluate_during_training", "zero_order_optim", "efficient_zero_order",
        "zo_cache_z", "zo_no_decay_bias_norm", "zero_order_use_trainer_optim", "scale_lr_with_samples",
        "zero_order_clip_grad", "use_zo_grad_est", "recompute_norms", "scale_norm_by_num_params",
        "norm_running_update", "change_grad_estimate", "zo_by_layer", "optimize_acc", "layer_wise_optim",
        "head_tuning", "prefix_tuning", "no_reparam", "prefix_init_by_real_act", "from_linearhead",
        "lp_early_stopping", "prob_as_feature", "overwrite_output_dir", "no_train", "no_predict", "save_at_last",
        "random_model_init", "tie_emb", "sweep", "save_logit", "save_model", "torch_adamw", "zo_variant_corrected",
        "fzoo_batched"),
    "free text / any integer (only copied to the log or a file name)": ("tag", "array_id", "model_id"),
    "refused when set (mezo.config.legacy.check_refused)": tuple(
        name for g in (LegacyModelArguments, LegacyDataArguments, LegacyTrainingArguments) for name in refused_fields(g)),
    "a method's choices, declared next to it (mezo.zo.methods)": tuple(
        name for name, hp in method_hparams().items() if hp.choices),
    "stock TrainingArguments fields re-defaulted here (checked by TrainingArguments or run.py)": (
        "report_to", "save_strategy", "resume_from_checkpoint", "remove_unused_columns", "disable_tqdm"),
}


def bad_field(*groups):
    """(flag, value, wording) of the first field outside its range, or None."""
    for g in groups:
        for name, (ok, wording) in RANGES.items():
            if hasattr(g, name) and not ok(getattr(g, name)):
                return f"--{name}", getattr(g, name), wording
    return None


def check(group) -> None:
    """Refuse the first field of one argument group outside its range (called by its __post_init__)."""
    bad = bad_field(group)
    if bad:
        flag, value, wording = bad
        raise UsageError(f"{flag} {value}: must be {wording}")


def annotate(parser) -> None:
    """Append each range to its flag's --help text."""
    for action in parser._actions:
        if action.dest in RANGES:
            action.help = f"{action.help or ''} [range: {RANGES[action.dest][1]}]".strip()
