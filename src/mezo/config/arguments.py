"""The four argument groups of run.py (model, data, training, adapters), with the reference's flag names
and defaults.

Parsed by HfArgumentParser so that the original shell commands keep working: bools take an
optional value, the last occurrence of a flag wins, `--max_seq_len` is an alias of
`--max_seq_length`. As in the Hugging Face examples, each dataclass validates its own flags in
`__post_init__` (ranges from src/mezo/ranges.py, then combinations) and derives what follows from
them, so a bad command line fails while parsing, before anything loads; run.py checks only what
needs the task, the file system or the model's config. Run-defining flags carry RUN_DEFINING in
their field metadata (the resume fingerprint). Flags of the reference that this project does not
implement are kept as fields so that old command lines parse, but setting one to a non-default
value is an error (`check_unsupported`) instead of being silently ignored.
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
from mezo.errors import UsageError
from mezo.zo.ablations import SAMPLE_SCHEDULERS, VARIANTS
from mezo.zo.methods import OPTIMIZERS as ZO_METHODS


# Field metadata key: the flag defines the run, so a checkpoint written with another value is not
# resumed (src/mezo/checkpoint.py). Kept out of argparse by `ArgumentParser`.
RUN_DEFINING = "run_defining"

# TrainingArguments' own fields that define a run (declared by Hugging Face, so named here).
STOCK_RUN_DEFINING = (
    "seed", "data_seed", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
    "num_train_epochs", "learning_rate", "weight_decay", "warmup_steps", "adam_beta1",
    "adam_beta2", "adam_epsilon", "max_grad_norm", "dataloader_drop_last", "fp16", "bf16", "eval_steps",
)


def _f(default, help, run=False, **kw):
    """A flag with its help; `run=True` marks it run-defining (RUN_DEFINING)."""
    return field(default=default, metadata={"help": help, **({RUN_DEFINING: True} if run else {}), **kw})


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={
        "help": "Hugging Face hub id (roberta-large), a local folder, or `splade-tiny` (embedded, offline)", RUN_DEFINING: True})
    config_name: Optional[str] = _f(None, "config to use instead of the model's own", run=True)
    tokenizer_name: Optional[str] = _f(None, "tokenizer to use instead of the model's own")
    cache_dir: Optional[str] = _f(None, "Hugging Face download cache")
    few_shot_type: str = _f("prompt-demo", "finetune (CLS head), prompt (MLM prompt) or prompt-demo "
                            "(prompt + demonstrations); the scripts pass prompt", run=True)
    random_segment: bool = _f(False, "[unsupported] BERT: random re-init of an enlarged token-type table")
    l2_loss: bool = _f(False, "classification loss = MSE between label-word logits and one-hot labels", run=True)
    use_task_word: bool = _f(False, "[unsupported] legacy lm_head path; regression scores are always "
                             "produced here")
    sfc: bool = _f(False, "[unsupported] surface-form calibration (OPT-era)")
    icl_sfc: bool = _f(False, "[unsupported] in-context surface-form calibration (OPT-era)")

    @property
    def prompt(self) -> bool:
        """Prompt-based (an MLM head at the mask) rather than a classification head."""
        return "prompt" in self.few_shot_type

    def __post_init__(self):
        ranges.check(self)
        if self.few_shot_type not in ("finetune", "prompt", "prompt-demo"):
            raise UsageError(f"--few_shot_type {self.few_shot_type!r}: expected finetune, prompt or prompt-demo")


@dataclass
class DataArguments:
    task_name: str = field(metadata={"help": "task key (SST-2, sst-5, MNLI, uci-sentiment, ...), case-insensitive",
                                     RUN_DEFINING: True})
    data_dir: str = field(metadata={"help": "folder with the split files, e.g. data/k-shot-1k-test/SST-2/16-42",
                                    RUN_DEFINING: True})
    max_seq_length: int = _f(128, "max tokens after template rendering", aliases=["--max_seq_len"], run=True)
    overwrite_cache: bool = _f(False, "no effect: features are rebuilt every run (no cache is needed)")
    num_k: int = _f(16, "K (examples per label); recorded in the log for gather_result, not used for sampling")
    num_sample: int = _f(16, "with demonstrations: demo resamplings per dev/test example (logits averaged)", run=True)
    num_demo: int = _f(1, "[only 1 supported] demonstrations per label")
    auto_demo: bool = _f(True, "with prompt-demo, extend the template with one demo slot per label", run=True)
    template: Optional[str] = _f(None, "template string, e.g. *cls**sent_0*_It_was*mask*.*sep+*", run=True)
    mapping: Optional[str] = _f(None, "label -> label word, a Python dict literal, e.g. {'0':'terrible','1':'great'}", run=True)
    template_path: Optional[str] = _f(None, "[unsupported] file of templates")
    mapping_path: Optional[str] = _f(None, "[unsupported] file of mappings")
    prompt_path: Optional[str] = _f(None, "[unsupported] file of template<TAB>mapping lines")
    template_id: Optional[int] = _f(None, "[unsupported] line of --template_path")
    mapping_id: Optional[int] = _f(None, "[unsupported] line of --mapping_path")
    prompt_id: Optional[int] = _f(None, "[unsupported] line of --prompt_path")
    top_n_template: Optional[int] = _f(None, "[unsupported] template ensemble size")
    sfc_prompt: Optional[str] = _f(None, "[unsupported] calibration prompt")
    tag: str = _f("", "free-form run tag, copied to the log and used by tools/gather_result.py")
    demo_filter: bool = _f(False, "filter demonstrations by similarity (precomputed embeddings in data_dir)", run=True)
    demo_filter_rate: float = _f(0.5, "fraction of candidates kept by --demo_filter", run=True)
    demo_filter_model: Optional[str] = _f(None, "name in train_<model>.npy / <split>_<model>.npy", run=True)
    debug_mode: bool = _f(False, "[unsupported] prints while filtering demonstrations")
    double_demo: bool = _f(False, "with demonstrations, double max_seq_length", run=True)
    first_sent_limit: Optional[int] = _f(None, "token cap for sentence 0", run=True)
    other_sent_limit: Optional[int] = _f(None, "token cap for every other sentence", run=True)
    use_full_length: Optional[bool] = _f(None, "[unsupported] unused in the reference")
    gpt3_in_context_head: bool = _f(False, "[unsupported] GPT-3 style in-context prompts")
    gpt3_in_context_tail: bool = _f(False, "[unsupported] GPT-3 style in-context prompts")
    gpt3_in_context_num: int = _f(32, "[unsupported] GPT-3 style in-context prompts")
    gpt3_demo_separator: str = _f("\n\n\n", "[unsupported] GPT-3 style in-context prompts")
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
class MezoTrainingArguments(TrainingArguments):
    # --- evaluation and logging
    evaluate_during_training: bool = _f(False, "evaluate on dev every --eval_steps and keep the best weights", run=True)
    log_file: str = _f("log", "result log: one JSON record per finished run is appended")
    # --- optimiser choice
    optimizer: str = _f("adam", "adam (AdamW) or sgd", choices=["adam", "sgd"], run=True)
    torch_adamw: bool = _f(False, "with --optimizer adam, use torch.optim.AdamW instead of the original's "
                           "transformers-4 AdamW (eps before the bias correction, weight decay after the update)", run=True)
    momentum: float = _f(0.0, "SGD momentum (--optimizer sgd, backprop or --zero_order_use_trainer_optim)", run=True)
    trainer: str = _f("standard", "standard or linearhead (logistic-regression probe)")
    # --- MeZO
    zero_order_optim: bool = _f(False, "train with MeZO (SPSA, forward passes only) instead of backprop", run=True)
    zero_order_eps: float = _f(1e-3, "MeZO perturbation scale epsilon", run=True)
    efficient_zero_order: bool = _f(False, "regenerate z from the step seed instead of storing it (MeZO proper; "
                                    "without it z is stored for the step, as in the original)", run=True)
    zo_cache_z: bool = _f(False, "store z for the step even with --efficient_zero_order: the same numbers, one "
                          "noise draw per step instead of three, one extra copy of the trainable parameters", run=True)
    zo_no_decay_bias_norm: bool = _f(False, "MeZO: exempt biases and LayerNorm weights from weight decay (the "
                                     "reference decays every perturbed parameter)", run=True)
    zo_max_skipped_steps: float = _f(100, "MeZO: stop the run (exit code 3, no log record) once more than this "
                                     "many updates were skipped for a non-finite loss; below 1: a fraction of "
                                     "max_steps; negative: never stop")
    zo_check_sync_steps: int = _f(0, "data-parallel MeZO: every n steps compare a checksum of the trainable "
                                  "parameters across ranks and stop if they differ (0 = off)")
    zo_method: str = _f("mezo", "zeroth-order method of the direct path (src/mezo/zo_methods.py; README: the "
                        "zeroth-order family)", choices=list(ZO_METHODS), run=True)
    zo_sign_elementwise: bool = _f(False, "--zo_method sign: update with sign(g z) per coordinate instead of sign(g) z", run=True)
    zo_momentum: float = _f(0.9, "--zo_method momentum: heavy-ball momentum (ZO-Bench: 0.9)", run=True)
    hizoo_alpha: float = _f(1e-6, "--zo_method hizoo: smoothing constant of the diagonal Hessian estimate", run=True)
    hizoo_form: str = _f("paper", "--zo_method hizoo: the paper's Sigma update, or code2024 (the 2024 RoBERTa "
                         "fork's)", choices=["paper", "code2024"], run=True)
    lozo_rank: int = _f(4, "--zo_method lozo/lozo_m: rank r of the U V^T perturbations", run=True)
    lozo_nu: int = _f(50, "--zo_method lozo/lozo_m: V is redrawn every nu steps", run=True)
    lozo_beta1: float = _f(0.9, "--zo_method lozo_m: momentum in the U space", run=True)
    fzoo_n: int = _f(8, "--zo_method fzoo: N one-sided Rademacher estimates per step (no published default)", run=True)
    fzoo_batched: bool = _f(False, "--zo_method fzoo: the N perturbed losses in one vmapped forward (N copies of the "
                            "trainable parameters, N times the activations); where it cannot run (the copies over "
                            "half the free memory, an op vmap cannot batch, out of memory) a warning and one "
                            "forward per loss: same numbers (src/mezo/fzoo_batched.py)", run=True)
    zero_order_use_trainer_optim: bool = _f(False, "[ablation] write the ZO gradient into .grad and let the "
                                            "torch optimizer and scheduler update", run=True)
    zero_order_sample: int = _f(1, "[ablation] n in n-SPSA: n SPSA pairs per step, estimates averaged "
                                "(needs --zero_order_use_trainer_optim when n > 1)", run=True)
    zero_order_sample_scheduler: Optional[str] = _f(None, "[ablation] constant (n samples) or linear "
                                                    "(max(1, floor(step / max_steps * n))); unset means constant "
                                                    "here - the reference used 1 sample when it was unset", run=True)
    scale_lr_with_samples: bool = _f(False, "[ablation] do not divide the n-SPSA estimate by n", run=True)
    zero_order_clip_grad: bool = _f(False, "[ablation] clip the ZO gradient norm to max_grad_norm (without it ZO runs "
                                    "never clip: max_grad_norm is set to 0)", run=True)
    zo_variant: Optional[str] = _f(None, "[ablation] grad_norm or param_norm: perturb block b by z/c_b and "
                                   "write c_b z into the estimate (blocks: embed, head, each layer). As in the "
                                   "original, --efficient_zero_order perturbs with plain z and the direct update "
                                   "uses plain z; --zo_variant_corrected applies the variant on every path", run=True)
    zo_variant_corrected: bool = _f(False, "[ablation] the variants as the paper defines them: z/c_b perturbation "
                                    "and c_b z update on every path (also with --efficient_zero_order and on the "
                                    "direct update), and --scale_norm_by_num_params divides every kind of "
                                    "constant by sqrt(#params)", run=True)
    use_zo_grad_est: bool = _f(False, "[ablation] estimate block norms by ZO", run=True)
    recompute_norms: bool = _f(False, "[ablation] recompute block norms every epoch",
                               aliases=["--recmopute_norms"], run=True)
    scale_norm_by_num_params: bool = _f(False, "[ablation] divide back-propagated grad_norm constants by "
                                        "sqrt(#params of the block); as in the original, a param_norm constant c "
                                        "becomes c/sqrt(c) and ZO-estimated constants are not scaled (all three "
                                        "divided by sqrt(#params) with --zo_variant_corrected)", run=True)
    norm_running_update: bool = _f(False, "[ablation] with --zo_by_layer --zo_variant grad_norm: refresh each "
                                   "block constant from its latest estimate", run=True)
    change_grad_estimate: bool = _f(False, "[ablation] variants change the expectation, not only the variance", run=True)
    zo_by_layer: bool = _f(False, "[ablation] one SPSA pair per block (unblocked parameters form a last "
                           "block); needs --zero_order_use_trainer_optim", run=True)
    max_zo_forward_steps: int = _f(0, "[ablation] also stop after this many ZO forward passes (0 = off)", run=True)
    optimize_acc: bool = _f(False, "[ablation] MeZO objective = minus the batch accuracy", run=True)
    layer_wise_optim: bool = _f(False, "[ablation] perturb only layer (step mod L) each step", run=True)
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
    # --- reference flags kept only so that old command lines parse
    fix_layers: int = _f(0, "[unsupported] exclude embeddings and the bottom n layers from Adam")
    optimizer_variant: str = _f("", "[unsupported] signgd")
    hf_inference_model: bool = _f(False, "[unsupported] OPT multi-GPU fp16 loading")
    efficient_zero_order_fp16: bool = _f(False, "[unsupported] OPT fp16 loading")
    untie_emb: bool = _f(False, "[unsupported] OPT: untie embeddings")
    kernel_formula: str = _f("sgd", "[unsupported] eNTK experiments")
    kernel_solver: str = _f("logistic", "[unsupported] eNTK experiments")
    load_kernels: Optional[str] = _f(None, "[unsupported] eNTK experiments")
    overwrite_kernels: bool = _f(False, "[unsupported] eNTK experiments")
    exclude_embeddings: bool = _f(False, "[unsupported] eNTK experiments")
    exclude_head: bool = _f(False, "[unsupported] eNTK experiments")
    only_biases: bool = _f(False, "[unsupported] eNTK experiments")
    exclude_first_layers: int = _f(-1, "[unsupported] eNTK experiments")
    sync_embedding_layers: bool = _f(False, "[unsupported] eNTK experiments")
    kernel_regularization: float = _f(0.0, "[unsupported] eNTK experiments")
    kernel_gamma: float = _f(1.0, "[unsupported] eNTK experiments")
    binary_classification: bool = _f(False, "[unsupported] eNTK experiments")
    adjust_for_init: bool = _f(False, "[unsupported] eNTK experiments")
    f0_scaling: float = _f(1.0, "[unsupported] eNTK experiments")
    num_hvp_vecs: int = _f(128, "[unsupported] unused in the reference")
    mc_tol: float = _f(0.1, "[unsupported] unused in the reference")

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

    @property
    def zo_store_z(self) -> bool:
        """z kept in memory for the step (one noise draw instead of three, one extra copy of the
        parameters): the original's non-efficient mode, or --zo_cache_z; else regenerated (MeZO)."""
        return self.zo_cache_z or not self.efficient_zero_order

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
        check_ablations(self)
        check_zo_method(self)
        super().__post_init__()


# ----- flag combinations of the training group (MezoTrainingArguments.__post_init__) -----------------
def check_run_control(a) -> None:
    """Steps, evaluation, checkpoints, trainer choice."""
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


def check_ablations(a) -> None:
    """MeZO ablation, momentum and linear-probing flag combinations (ranges: src/mezo/ranges.py)."""
    def is_set(flag):
        return getattr(a, flag) not in (False, None, 0)
    zo_only = ("zero_order_use_trainer_optim", "zo_variant", "zo_by_layer", "optimize_acc", "layer_wise_optim",
               "max_zo_forward_steps", "zero_order_sample_scheduler", "zero_order_clip_grad", "scale_lr_with_samples")
    if not a.zero_order_optim:
        for flag in zo_only:
            if is_set(flag):
                raise UsageError(f"--{flag}: needs --zero_order_optim (it is a MeZO ablation)")
    if a.zero_order_sample > 1 and not (a.zero_order_optim and a.zero_order_use_trainer_optim):
        raise UsageError(f"--zero_order_sample {a.zero_order_sample}: n > 1 needs --zero_order_optim "
                         "--zero_order_use_trainer_optim (n-SPSA writes its estimate into .grad)")
    if a.zero_order_sample_scheduler not in SAMPLE_SCHEDULERS:
        raise UsageError(f"--zero_order_sample_scheduler {a.zero_order_sample_scheduler!r}: expected constant or linear")
    if a.zero_order_optim and not a.zero_order_use_trainer_optim:
        for flag in ("zero_order_sample_scheduler", "zero_order_clip_grad", "zo_by_layer"):
            if is_set(flag):
                raise UsageError(f"--{flag}: needs --zero_order_use_trainer_optim (the direct MeZO update "
                                 "takes one SPSA pair over all parameters per step)")
        if a.momentum:
            raise UsageError(f"--momentum {a.momentum}: the direct MeZO update has no momentum; add "
                             "--zero_order_use_trainer_optim --optimizer sgd for ZO-SGD with momentum")
    if a.zo_variant not in VARIANTS:
        raise UsageError(f"--zo_variant {a.zo_variant!r}: expected grad_norm or param_norm")
    if a.use_zo_grad_est and a.zo_variant != "grad_norm":
        raise UsageError("--use_zo_grad_est: needs --zo_variant grad_norm")
    for flag in ("recompute_norms", "scale_norm_by_num_params", "change_grad_estimate", "zo_variant_corrected"):
        if is_set(flag) and not a.zo_variant:
            raise UsageError(f"--{flag}: needs --zo_variant grad_norm or param_norm")
    if a.norm_running_update and not (a.zo_by_layer and a.zo_variant == "grad_norm"):
        raise UsageError("--norm_running_update: needs --zo_by_layer and --zo_variant grad_norm")
    if a.momentum and a.optimizer != "sgd":
        raise UsageError(f"--momentum {a.momentum}: needs --optimizer sgd (AdamW has its own betas)")
    probing = a.trainer == "linearhead" or a.from_linearhead
    for flag in ("prob_as_feature", "lp_early_stopping"):
        if is_set(flag) and not probing:
            raise UsageError(f"--{flag}: needs --trainer linearhead or --from_linearhead")


def check_zo_method(a) -> None:
    """--zo_method other than mezo: a direct-path method over a fixed parameter list (src/mezo/zo_methods.py)."""
    if a.fzoo_batched and a.zo_method != "fzoo":
        raise UsageError(f"--fzoo_batched: batches FZOO's perturbed losses; needs --zo_method fzoo, not {a.zo_method}")
    if a.zo_method == "mezo":
        return
    if not a.zero_order_optim or a.zero_order_use_trainer_optim:
        raise UsageError(f"--zo_method {a.zo_method}: needs --zero_order_optim without --zero_order_use_trainer_optim")
    for flag in ("zo_variant", "layer_wise_optim", "zo_cache_z"):
        if getattr(a, flag):
            raise UsageError(f"--{flag}: a MeZO ablation, not available with --zo_method {a.zo_method}")
    if a.zo_method == "conservative" and a.weight_decay:
        raise UsageError(f"--weight_decay {a.weight_decay}: --zo_method conservative is defined without weight decay")


# Fields whose non-default value this project refuses (name -> why).
UNSUPPORTED = {
    "random_segment": "BERT token-type re-initialisation is not implemented",
    "use_task_word": "legacy; STS-B scores are always produced from the two label words",
    "sfc": "surface-form calibration (OPT-era) is not implemented",
    "icl_sfc": "surface-form calibration (OPT-era) is not implemented",
    "num_demo": "exactly one demonstration per label is used (as in the reference)",
    "template_path": "template files are not implemented; pass --template",
    "mapping_path": "mapping files are not implemented; pass --mapping",
    "prompt_path": "prompt files are not implemented; pass --template and --mapping",
    "template_id": "template files are not implemented",
    "mapping_id": "mapping files are not implemented",
    "prompt_id": "prompt files are not implemented",
    "top_n_template": "template ensembles are not implemented",
    "sfc_prompt": "surface-form calibration is not implemented",
    "use_full_length": "unused in the reference",
    "gpt3_in_context_head": "GPT-3 style in-context prompts are not implemented",
    "gpt3_in_context_tail": "GPT-3 style in-context prompts are not implemented",
    "gpt3_in_context_num": "GPT-3 style in-context prompts are not implemented",
    "gpt3_demo_separator": "GPT-3 style in-context prompts are not implemented",
    "fix_layers": "layer exclusion from the optimizer is not implemented",
    "optimizer_variant": "sign-GD is not implemented",
    "hf_inference_model": "OPT multi-GPU loading is not part of the medium-model code",
    "efficient_zero_order_fp16": "OPT fp16 loading is not part of the medium-model code",
    "untie_emb": "OPT only",
    "kernel_formula": "the eNTK kernel trainer is not implemented",
    "kernel_solver": "the eNTK kernel trainer is not implemented",
    "load_kernels": "the eNTK kernel trainer is not implemented",
    "overwrite_kernels": "the eNTK kernel trainer is not implemented",
    "exclude_embeddings": "the eNTK kernel trainer is not implemented",
    "exclude_head": "the eNTK kernel trainer is not implemented",
    "only_biases": "the eNTK kernel trainer is not implemented",
    "exclude_first_layers": "the eNTK kernel trainer is not implemented",
    "sync_embedding_layers": "the eNTK kernel trainer is not implemented",
    "kernel_regularization": "the eNTK kernel trainer is not implemented",
    "kernel_gamma": "the eNTK kernel trainer is not implemented",
    "binary_classification": "the eNTK kernel trainer is not implemented",
    "adjust_for_init": "the eNTK kernel trainer is not implemented",
    "f0_scaling": "the eNTK kernel trainer is not implemented",
    "num_hvp_vecs": "unused in the reference",
    "debug_mode": "the demonstration filter's debugging prints are not implemented",
    "mc_tol": "unused in the reference",
}


def check_unsupported(*arg_groups) -> None:
    for group in arg_groups:
        defaults = {f.name: f.default for f in dataclasses.fields(group)}
        for name, why in UNSUPPORTED.items():
            if name in defaults and getattr(group, name) != defaults[name]:
                raise UsageError(f"--{name} {getattr(group, name)!r}: not supported ({why})")


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
        return super().add_argument(*names, **kwargs)

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument
        group.add_argument = lambda *names, **kw: add(*names, **{k: v for k, v in kw.items() if k != RUN_DEFINING})
        return group


def _one_line_error(message):
    """argparse's own errors (bad int, unknown choice, missing flag) as one line, not a usage dump."""
    raise UsageError(message)


def build_parser() -> ArgumentParser:
    from mezo.config.ranges import annotate
    parser = ArgumentParser((ModelArguments, DataArguments, MezoTrainingArguments, AdapterArguments))
    annotate(parser)  # --help states every range (src/mezo/ranges.py)
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
    check_unsupported(*groups)
    return groups
