"""The four argument groups of run.py (model, data, training, adapters), with the reference's flag names
and defaults.

Parsed by HfArgumentParser so that the original shell commands keep working: bools take an
optional value, the last occurrence of a flag wins, `--max_seq_len` is an alias of
`--max_seq_length`. As in the Hugging Face examples, each dataclass validates its own flags in
`__post_init__` (ranges from ``mezo.config.ranges``, then combinations), so a bad command line
fails while parsing, before anything loads; run.py checks only what needs the task, the file
system or the model's config. The groups are assembled from mixins: the zeroth-order flags
(``mezo.config.zo``, the methods' hyper-parameters generated from their declarations) and the
original's refused flags (``mezo.config.legacy``, one generic check). Field metadata marks
run-defining flags (``mezo.config.fields``, the resume fingerprint).
"""
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from transformers import HfArgumentParser, TrainingArguments

from mezo.config import ranges
from mezo.config.fields import REFUSED, RUN_DEFINING, flag as _f
from mezo.config.legacy import (LegacyDataArguments, LegacyModelArguments, LegacyTrainingArguments,
                                check_refused)
from mezo.config.zo import ZeroOrderArguments
from mezo.data.prompt import FEW_SHOT_TYPES
from mezo.errors import UsageError


# TrainingArguments' own fields that define a run (declared by Hugging Face, so named here).
STOCK_RUN_DEFINING = (
    "seed", "data_seed", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
    "num_train_epochs", "learning_rate", "weight_decay", "warmup_steps", "adam_beta1",
    "adam_beta2", "adam_epsilon", "max_grad_norm", "dataloader_drop_last", "fp16", "bf16", "eval_steps",
)


@dataclass
class ModelArguments(LegacyModelArguments):
    model_name_or_path: str = field(metadata={
        "help": "Hugging Face hub id (roberta-large), a local folder, or `splade-tiny` (embedded, offline)", RUN_DEFINING: True})
    config_name: Optional[str] = _f(None, "config to use instead of the model's own", run=True)
    tokenizer_name: Optional[str] = _f(None, "tokenizer to use instead of the model's own")
    cache_dir: Optional[str] = _f(None, "Hugging Face download cache")
    few_shot_type: str = _f("prompt-demo", "finetune (CLS head), prompt (MLM prompt) or prompt-demo "
                            "(prompt + demonstrations); the scripts pass prompt", run=True)
    l2_loss: bool = _f(False, "classification loss = MSE between label-word logits and one-hot labels", run=True)

    def __post_init__(self):
        ranges.check(self)
        if self.few_shot_type not in FEW_SHOT_TYPES:
            raise UsageError(f"--few_shot_type {self.few_shot_type!r}: expected {', '.join(FEW_SHOT_TYPES)}")


@dataclass
class DataArguments(LegacyDataArguments):
    task_name: str = field(metadata={"help": "task key (SST-2, sst-5, MNLI, uci-sentiment, ...), case-insensitive",
                                     RUN_DEFINING: True})
    data_dir: str = field(metadata={"help": "folder with the split files, e.g. data/k-shot-1k-test/SST-2/16-42",
                                    RUN_DEFINING: True})
    max_seq_length: int = _f(128, "max tokens after template rendering", aliases=["--max_seq_len"], run=True)
    overwrite_cache: bool = _f(False, "no effect: features are rebuilt every run (no cache is needed)")
    num_k: int = _f(16, "K (examples per label); recorded in the log for gather_result, not used for sampling")
    num_sample: int = _f(16, "with demonstrations: demo resamplings per dev/test example (logits averaged)", run=True)
    auto_demo: bool = _f(True, "with prompt-demo, extend the template with one demo slot per label", run=True)
    template: Optional[str] = _f(None, "template string, e.g. *cls**sent_0*_It_was*mask*.*sep+*", run=True)
    mapping: Optional[str] = _f(None, "label -> label word, a Python dict literal, e.g. {'0':'terrible','1':'great'}", run=True)
    tag: str = _f("", "free-form run tag, copied to the log and used by tools/gather_result.py")
    demo_filter: bool = _f(False, "filter demonstrations by similarity (precomputed embeddings in data_dir)", run=True)
    demo_filter_rate: float = _f(0.5, "fraction of candidates kept by --demo_filter", run=True)
    demo_filter_model: Optional[str] = _f(None, "name in train_<model>.npy / <split>_<model>.npy", run=True)
    double_demo: bool = _f(False, "with demonstrations, double max_seq_length", run=True)
    first_sent_limit: Optional[int] = _f(None, "token cap for sentence 0", run=True)
    other_sent_limit: Optional[int] = _f(None, "token cap for every other sentence", run=True)
    truncate_head: bool = _f(False, "when too long, drop tokens from the front (demo mode only)", run=True)

    def __post_init__(self):
        self.task_name = self.task_name.lower()   # as the original: SST-2 -> sst-2
        ranges.check(self)


@dataclass
class AdapterArguments:
    """Parameter-efficient variants: which parameters exist and which train (their own --help group)."""
    _argument_group_name = "adapters (LoRA, prefix-tuning, head tuning)"

    apply_lora: bool = _f(False, "inject LoRA into the attention query and value projections", run=True)
    lora_r: Optional[int] = _f(None, "LoRA rank (scripts: 8)", run=True)
    lora_alpha: Optional[int] = _f(None, "LoRA alpha (scripts: 16)", run=True)
    lora_freeze_head: bool = _f(False, "with LoRA, also freeze the MLM head (the reference trains it)", run=True)
    prefix_tuning: bool = _f(False, "prefix-tuning: learn key/value prefixes in every attention layer", run=True)
    num_prefix: int = _f(10, "number of prefix tokens (scripts: 5)", run=True)
    no_reparam: bool = _f(False, "learn the prefixes directly (no MLP reparameterisation)", run=True)
    prefix_init_by_real_act: bool = _f(False, "initialise prefixes from real activations of random tokens", run=True)
    head_tuning: bool = _f(False, "train only the MLM head", run=True)

    def __post_init__(self):
        ranges.check(self)
        if self.apply_lora and (not self.lora_r or not self.lora_alpha):
            raise UsageError("--apply_lora: needs --lora_r and --lora_alpha (the scripts use 8 and 16)")
        if self.prefix_init_by_real_act and not self.no_reparam:
            raise UsageError("--prefix_init_by_real_act: needs --no_reparam")


@dataclass
class MezoTrainingArguments(ZeroOrderArguments, LegacyTrainingArguments, TrainingArguments):
    # --- evaluation and logging
    evaluate_during_training: bool = _f(False, "evaluate on dev every --eval_steps and keep the best weights", run=True)
    log_file: str = _f("log", "result log: one JSON record per finished run is appended")
    # --- optimiser choice
    optimizer: str = _f("adam", "adam (AdamW) or sgd", choices=["adam", "sgd"], run=True)
    torch_adamw: bool = _f(False, "with --optimizer adam, use torch.optim.AdamW instead of the original's "
                           "transformers-4 AdamW (eps before the bias correction, weight decay after the update)", run=True)
    momentum: float = _f(0.0, "SGD momentum (--optimizer sgd, backprop or --zero_order_use_trainer_optim)", run=True)
    trainer: str = _f("standard", "standard or linearhead (logistic-regression probe)")
    # --- linear probing
    from_linearhead: bool = _f(False, "fit the logistic-regression head first, then train (LP-FT)", run=True)
    lp_early_stopping: bool = _f(False, "looser logistic-regression solver (tol 1e-2, 1000 iterations)", run=True)
    prob_as_feature: bool = _f(False, "linear probe on the label-word distribution, read as centred "
                               "log-probabilities so that the fitted head folds into the decoder rows", run=True)
    # --- run control
    overwrite_output_dir: bool = _f(False, "train into a non-empty output_dir (removed from TrainingArguments "
                                    "in transformers 5; kept because the scripts pass it)")
    no_train: bool = _f(False, "skip training (zero-shot record)")
    no_predict: bool = _f(False, "skip the test evaluation")
    save_at_last: bool = _f(False, "save the final trainable weights to output_dir")
    save_model: bool = _f(False, "after training (best-dev weights), write <output_dir>/model: a Hugging Face "
                          "folder (LoRA merged; prefixes as prefix.safetensors) + tokenizer + mezo_export.json, "
                          "for tools/predict.py")
    random_model_init: bool = _f(False, "re-initialise all weights randomly", run=True)
    tie_emb: bool = _f(False, "tie the MLM decoder to the input embeddings (the reference unties them)", run=True)
    sweep: bool = _f(False, "append a timestamp folder to output_dir")
    array_id: int = _f(-1, "id used in the --save_logit file name")
    model_id: int = _f(-1, "id used in the --save_logit file name")
    save_logit: bool = _f(False, "save the averaged test logits as <task>-<model_id>-<array_id>.npy")
    save_logit_dir: Optional[str] = _f(None, "folder for --save_logit")

    # Defaults that differ from TrainingArguments': this project does its own saving and reporting.
    report_to: Optional[str] = field(default="none", metadata={"help": "logging integrations"})
    save_strategy: str = field(default="no", metadata={"help": "Trainer checkpoints (see --save_steps)"})
    save_steps: float = field(default=0, metadata={"help": "write output_dir/checkpoint-<step> every n updates "
                              "(atomic; trainable weights, optimizer, RNG, best-dev state); 0 = never"})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "keep the newest n checkpoints"})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={
        "help": "continue a killed run exactly: a checkpoint-<step> folder, or auto (the newest in output_dir; "
                "none there: start from scratch)"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep mask_pos for the model"})
    disable_tqdm: Optional[bool] = field(default=False, metadata={"help": "progress bar off"})
    logging_steps: float = field(default=500, metadata={"help": "log every n updates", RUN_DEFINING: True})
    lr_scheduler_type: Optional[str] = field(default=None, metadata={
        "help": "learning-rate schedule (linear, constant, cosine, ...). Unset: constant on the direct MeZO path "
                "(the original never consulted a scheduler there), linear otherwise (the Trainer's default). "
                "Set explicitly, it is honoured on every path, the direct MeZO update included", RUN_DEFINING: True})

    def __post_init__(self):
        if self.no_train:
            self.do_train = False
        if self.no_predict:
            self.do_predict = False
        if self.sweep:
            self.output_dir = os.path.join(self.output_dir, time.strftime("%Y%m%d-%H%M%S"))
        if self.zero_order_optim and not self.zero_order_clip_grad:
            self.max_grad_norm = 0.0   # the original never clipped a ZO estimate unless asked to
        if self.lr_scheduler_type is None:
            direct_mezo = self.zero_order_optim and not self.zero_order_use_trainer_optim
            self.lr_scheduler_type = "constant" if direct_mezo else "linear"
        # `--optimizer` is the reference's switch; the Trainer reads `optim`.
        self.optim = {"adam": "adamw_torch", "sgd": "sgd"}[self.optimizer]
        if self.optimizer == "sgd" and self.momentum:
            self.optim_args = f"momentum={self.momentum}"
        if self.save_steps and self.save_steps > 0 and str(self.save_strategy) in ("no", "SaveStrategy.NO"):
            self.save_strategy = "steps"  # --save_steps alone turns checkpoints on
        if self.accelerator_config is None and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            # keep the RandomSampler of MezoTrainer.get_train_dataloader (the original's data order)
            self.accelerator_config = {"use_seedable_sampler": False}
        if not self.use_cpu and not torch.accelerator.is_available():
            # No accelerator: say so, as the Trainer wants it said. Then --bf16 runs as CPU autocast
            # (fp32 master weights) instead of stopping with "doesn't support bf16/gpu", accelerate
            # sets up multi-process CPU (gloo), and no pin_memory is asked for (nothing to pin to).
            self.use_cpu = True
        ranges.check(self)
        check_run_control(self)
        self.check_zero_order()
        super().__post_init__()


# ----- flag combinations of the training group (MezoTrainingArguments.__post_init__) -----------------
def check_run_control(a) -> None:
    """Steps, evaluation, checkpoints, trainer choice, momentum, linear probing."""
    if a.momentum and a.optimizer != "sgd":
        raise UsageError(f"--momentum {a.momentum}: needs --optimizer sgd (AdamW has its own betas)")
    probing = a.trainer == "linearhead" or a.from_linearhead
    for flag in ("prob_as_feature", "lp_early_stopping"):
        if getattr(a, flag) and not probing:
            raise UsageError(f"--{flag}: needs --trainer linearhead or --from_linearhead")
    if a.resume_from_checkpoint and not a.do_train:
        raise UsageError(f"--resume_from_checkpoint {a.resume_from_checkpoint}: needs --do_train")
    if a.do_train and a.evaluate_during_training and not a.eval_steps:
        raise UsageError("--eval_steps: required with --evaluate_during_training")
    if a.trainer not in ("standard", "linearhead"):
        raise UsageError(f"--trainer {a.trainer!r}: expected standard or linearhead (the kernel trainer is not implemented)")
    direct_ablation = (a.zero_order_optim and not a.zero_order_use_trainer_optim
                       and (a.zo_variant or a.layer_wise_optim))
    if a.gradient_accumulation_steps != 1 and direct_ablation:
        raise UsageError(f"--gradient_accumulation_steps {a.gradient_accumulation_steps}: not with --zo_variant or "
                         "--layer_wise_optim on the direct MeZO update (add --zero_order_use_trainer_optim)")


def run_defining(*groups) -> dict:
    """The run-defining flags of these argument objects, name -> value (a resumed run must match)."""
    out = {}
    for g in groups:
        for f in dataclasses.fields(g):
            if f.metadata.get(RUN_DEFINING) or (isinstance(g, TrainingArguments) and f.name in STOCK_RUN_DEFINING):
                out[f.name] = getattr(g, f.name)
    return out


class ArgumentParser(HfArgumentParser):
    """HfArgumentParser that keeps this project's field metadata (RUN_DEFINING) away from argparse."""

    def add_argument(self, *names, **kwargs):
        kwargs.pop(RUN_DEFINING, None)
        kwargs.pop(REFUSED, None)
        return super().add_argument(*names, **kwargs)

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument
        group.add_argument = lambda *names, **kw: add(*names, **{k: v for k, v in kw.items()
                                                                  if k not in (RUN_DEFINING, REFUSED)})
        return group


def _one_line_error(message):
    """argparse's own errors (bad int, unknown choice, missing flag) as one line, not a usage dump."""
    raise UsageError(message)


def build_parser() -> ArgumentParser:
    from mezo.config.ranges import annotate
    parser = ArgumentParser((ModelArguments, DataArguments, MezoTrainingArguments, AdapterArguments))
    annotate(parser)  # --help states every range (mezo.config.ranges)
    parser.error = _one_line_error
    return parser


def parse_args(argv=None):
    """Parse argv (or a single .json config file) into (model, data, training, adapter) arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if len(argv) == 1 and argv[0].endswith(".json"):
        try:
            with open(argv[0]) as f:
                config = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"{argv[0]}: cannot read the JSON configuration ({e})")
        try:
            groups = parser.parse_dict(config)
        except ValueError as e:
            raise UsageError(f"{argv[0]}: {e}")
    else:
        try:
            groups = parser.parse_args_into_dataclasses(argv)
        except ValueError as e:  # unknown arguments, invalid TrainingArguments combinations
            raise UsageError(str(e).splitlines()[0]) from None
    check_refused(*groups)
    return groups
