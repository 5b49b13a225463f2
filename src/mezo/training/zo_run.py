"""What a zeroth-order run is made of: its optimizer (or gradient estimator), ablations and counters.

`ZORun` builds, from the arguments, the zeroth-order optimizer of --zo_method over param groups
(contiguous runs of the model's trainable parameters with equal weight decay, block and layer
set, so z is drawn over the same list as an ungrouped step), or with
--zero_order_use_trainer_optim the `SPSAGradient` estimator for the stock optimizer. The step
seeds come from the optimizer's (or estimator's) stream, seeded by --seed. It is also the
callback that acts at the loop's public events: block constants are scheduled when an epoch
starts and training stops past --max_zo_forward_steps. The skip limit and the replica sync check
run after each update (`after_update`), so nothing reaches back into the trainer.
"""
import logging
import math

from transformers import TrainerCallback

from mezo.errors import TrainingDiverged
from mezo.training import distributed
from mezo.training import fzoo_batched
from mezo.zo import ablations as zo_ablations
from mezo.zo.backend import FastNoise
from mezo.zo.estimator import SPSAGradient
from mezo.zo.methods import OPTIMIZERS

logger = logging.getLogger(__name__)


def no_decay(name: str) -> bool:
    """Biases and LayerNorm weights, case-insensitively (RoBERTa's head uses `layer_norm`)."""
    lname = name.lower()
    return "bias" in lname or "layernorm" in lname or "layer_norm" in lname


def skip_limit(value, max_steps):
    """--zo_max_skipped_steps as a count: n >= 1 as is, 0 < x < 1 a fraction of max_steps, < 0 no limit."""
    if value is None or value < 0:
        return None
    if 0 < value < 1:
        return math.ceil(value * max_steps) if max_steps and max_steps > 0 else None
    return int(value)


def method_hyper(args, method) -> dict:
    """The method's hyper-parameters from their flags (declared once, in the method's ``hyper``)."""
    return {k: getattr(args, hp.flag) for k, hp in method.hyper.items()}


def contiguous_groups(named, keys) -> list:
    """Param groups: maximal runs of consecutive parameters with equal keys, in model order."""
    groups = []
    for (_, p), key in zip(named, keys):
        if groups and groups[-1][1] == key:
            groups[-1][0].append(p)
        else:
            groups.append(([p], key))
    return [{"params": ps, **key} for ps, key in groups]


class ZORun(TrainerCallback):
    """The state of a zeroth-order run (any --zero_order_optim path) and its two loop events."""

    def __init__(self, model, args):
        a = self.args = args
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.skipped = self.forwards = 0
        self.epochs = 0
        noise = FastNoise(cache_z=a.zo_store_z) if a.zo_method == "mezo" else None   # others: the method's own
        self.ab = None   # layer selection / block scaling / zo_by_layer (mezo.zo.ablations; MeZO only)
        if a.zero_order_use_trainer_optim or zo_ablations.needs_state(a):
            layers = getattr(getattr(model, "config", None), "num_hidden_layers", 1)
            self.ab = zo_ablations.ZOAblation(named, layers, a, noise)
        self.optimizer = self.estimator = None
        if a.zero_order_use_trainer_optim:   # .grad for the stock optimizer
            self.estimator = SPSAGradient(self.params, a.zero_order_eps, samples=a.zero_order_sample,
                                          scheduler=a.zero_order_sample_scheduler,
                                          scale_lr_with_samples=a.scale_lr_with_samples, seed=a.seed,
                                          noise=noise, blocks=self.ab)
        else:
            method = OPTIMIZERS[a.zo_method]
            keys = [{"weight_decay": 0.0 if a.zo_no_decay_bias_norm and no_decay(n) else a.weight_decay,
                     **(self.ab.group_key(i) if self.ab is not None else {})} for i, (n, _) in enumerate(named)]
            self.optimizer = method(contiguous_groups(named, keys), lr=a.learning_rate, eps=a.zero_order_eps,
                                    seed=a.seed, noise=noise, **method_hyper(a, method))
        self.batched = None   # --fzoo_batched: FZOO's N perturbed losses in one vmapped forward
        if a.zo_method == "fzoo" and a.fzoo_batched:
            self.batched = fzoo_batched.for_run(model, named, a.fzoo_n, self.count_forwards)

    def count_forwards(self, k: int) -> None:
        self.forwards += k

    def next_seed(self) -> int:
        """The next step seed of the run's one stream (the optimizer's or the estimator's)."""
        return (self.optimizer or self.estimator).next_seed()

    def before_step(self, loss_fn, loss_with_grad, global_step: int) -> None:
        """Ablations: block constants when an epoch starts; the groups this direct step perturbs."""
        if self.ab is None:
            return
        self.ab.maybe_consts(loss_fn, loss_with_grad, self.next_seed)
        if self.optimizer is not None:
            self.ab.configure(self.optimizer, global_step)

    def after_update(self, step: int, max_steps: int) -> None:
        """After update `step`: stop past --zo_max_skipped_steps; every --zo_check_sync_steps compare
        the data-parallel replicas (both raise: no record)."""
        a = self.args
        limit = skip_limit(a.zo_max_skipped_steps, max_steps)
        if limit is not None and self.skipped > limit:
            raise TrainingDiverged(
                f"--zo_max_skipped_steps {a.zo_max_skipped_steps:g}: {self.skipped} of the first {step} "
                f"MeZO steps were skipped for a non-finite loss; stopping (fp16 weights or a bad "
                f"--zero_order_eps {a.zero_order_eps:g}? see README: fp16/bf16)")
        if a.zo_check_sync_steps and step % a.zo_check_sync_steps == 0:
            distributed.check_in_sync(self.params, step)

    # ----- loop events -------------------------------------------------------------------------
    def on_epoch_begin(self, args, state, control, **kw):
        """Block constants are (re)computed on the first batch of the first epoch, or of every epoch
        with --recompute_norms."""
        if self.ab is not None and (self.epochs == 0 or args.recompute_norms):
            self.ab.need_consts = True
        self.epochs += 1

    def on_step_end(self, args, state, control, **kw):
        limit = args.max_zo_forward_steps
        if limit and limit > 0 and self.forwards > limit:
            # The original tests its stop conditions before its evaluation: the step that crosses
            # the limit is not evaluated (this callback is added after BestDevCallback).
            control.should_training_stop = True
            control.should_evaluate = False

    # ----- checkpoints (the optimizer's state is the stock optimizer.pt) ------------------------
    def state_dict(self) -> dict:
        return {"counters": {"zo_skipped": self.skipped, "zo_forwards": self.forwards},
                "estimator": self.estimator.state_dict() if self.estimator is not None else None}

    def load_state_dict(self, state: dict) -> None:
        counters = state["counters"]
        self.skipped = int(counters["zo_skipped"])
        self.forwards = int(counters["zo_forwards"])
        if self.estimator is not None:
            self.estimator.load_state_dict(state["estimator"])
        if self.ab is not None:
            logger.warning("resuming a MeZO ablation run whose ablation state is not checkpointed: "
                           "the continuation may differ from an uninterrupted run")
