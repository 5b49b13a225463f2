"""The zeroth-order flags: MeZO, the method of --zo_method with its hyper-parameters, the ablations.

``ZeroOrderArguments`` is a mixin of ``MezoTrainingArguments``. Each method's hyper-parameter flags
are not written here: they come from the method's own declaration (``hyper`` of the classes in
``mezo.zo.OPTIMIZERS``), with its default, --help text and range (``mezo.config.ranges``).
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional

from mezo.config.fields import RUN_DEFINING, flag as _f
from mezo.errors import UsageError
from mezo.zo.ablations import SAMPLE_SCHEDULERS, VARIANTS
from mezo.zo.methods import OPTIMIZERS


def method_hparams() -> dict:
    """flag -> HParam for every method's own hyper-parameters (stock TrainingArguments flags excluded)."""
    out = {}
    for cls in OPTIMIZERS.values():
        for hp in cls.hyper.values():
            if not hp.shared:
                out.setdefault(hp.flag, hp)
    return out


def _method_field(hp):
    meta = {"help": hp.help, RUN_DEFINING: True}
    if hp.choices and not isinstance(hp.default, bool):
        meta["choices"] = list(hp.choices)
    return hp.flag, type(hp.default), dataclasses.field(default=hp.default, metadata=meta)


# The methods' hyper-parameter flags, made from their declarations.
MethodArguments = dataclasses.make_dataclass(
    "MethodArguments", [_method_field(hp) for hp in method_hparams().values()], kw_only=True)


@dataclass(kw_only=True)
class ZeroOrderArguments(MethodArguments):
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
    zo_method: str = _f("mezo", "zeroth-order method of the direct path: a class of mezo.zo.OPTIMIZERS (README: "
                        "the zeroth-order family); its hyper-parameters are the flags below", choices=list(OPTIMIZERS),
                        run=True)
    fzoo_batched: bool = _f(False, "--zo_method fzoo: the N perturbed losses in one vmapped forward (N copies of the "
                            "trainable parameters, N times the activations); where it cannot run (the copies over "
                            "half the free memory, an op vmap cannot batch, out of memory) a warning and one "
                            "forward per loss: same numbers (mezo.training.fzoo_batched)", run=True)
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

    @property
    def zo_store_z(self) -> bool:
        """z kept in memory for the step (one noise draw instead of three, one extra copy of the
        parameters): the original's non-efficient mode, or --zo_cache_z; else regenerated (MeZO)."""
        return self.zo_cache_z or not self.efficient_zero_order

    def check_zero_order(self) -> None:
        """The zeroth-order flag combinations (called from MezoTrainingArguments.__post_init__)."""
        check_ablations(self)
        check_zo_method(self)


def check_ablations(a) -> None:
    """MeZO ablation flag combinations (their ranges: mezo.config.ranges)."""
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


def check_zo_method(a) -> None:
    """--zo_method other than mezo: a direct-path method (mezo.zo.methods) without MeZO's ablations."""
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
