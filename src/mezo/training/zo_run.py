"""What a MeZO run carries from one step to the next, in one object the checkpoint saves whole.

`ZORun` holds the trainable parameters and their weight decays, the generator of step seeds
(seeded by --seed, one draw per update, as the reference), the noise backend, the --zo_method
or ablation object and the counters (forward passes, skipped updates). It is also the callback
that acts on them at the loop's public events: block constants are scheduled when an epoch
starts and training stops past --max_zo_forward_steps. The skip limit and the replica sync check
run inside the step (`after_update`), so nothing reaches back into the trainer.
"""
import logging
import math

import numpy as np
import torch
from transformers import TrainerCallback

from mezo.training import distributed
from mezo.training import fzoo_batched
from mezo.zo import step as zo
from mezo.zo import ablations as zo_ablations
from mezo.zo import methods as zo_methods
from mezo.errors import TrainingDiverged

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


def zo_method_kwargs(a) -> dict:
    """The hyper-parameters of --zo_method, from its flags (named after the papers' symbols)."""
    return {"sign": dict(elementwise=a.zo_sign_elementwise), "momentum": dict(momentum=a.zo_momentum),
            "adam": dict(beta1=a.adam_beta1, beta2=a.adam_beta2, adam_eps=a.adam_epsilon),
            "hizoo": dict(alpha=a.hizoo_alpha, form=a.hizoo_form), "lozo": dict(rank=a.lozo_rank, nu=a.lozo_nu),
            "lozo_m": dict(rank=a.lozo_rank, nu=a.lozo_nu, beta1=a.lozo_beta1),
            "fzoo": dict(n=a.fzoo_n)}.get(a.zo_method, {})


def random_state_to_tensors(rs: np.random.RandomState) -> list:
    """A NumPy generator's state in a form `torch.load(weights_only=True)` accepts."""
    name, keys, pos, has_gauss, cached = rs.get_state(legacy=True)
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def set_random_state(rs: np.random.RandomState, state) -> None:
    name, keys, pos, has_gauss, cached = state
    rs.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


class ZORun(TrainerCallback):
    """The state of a zeroth-order run (any --zero_order_optim path) and its two loop events."""

    def __init__(self, model, args):
        a = self.args = args
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.decay = [0.0 if a.zo_no_decay_bias_norm and no_decay(n) else a.weight_decay for n, _ in named]
        self.seeds = np.random.RandomState(a.seed)
        self.skipped = self.forwards = 0
        self.epochs = 0
        self.noise = zo.default_noise(cache_z=a.zo_store_z)
        # --zo_method: a method that followed MeZO, on the same step (src/mezo/zo_methods.py)
        self.method = None if a.zo_method == "mezo" else zo_methods.build_method(
            a.zo_method, self.params, eps=a.zero_order_eps, weight_decay=self.decay, **zo_method_kwargs(a))
        self.batched = None   # --fzoo_batched: FZOO's N perturbed losses in one vmapped forward
        if a.zo_method == "fzoo" and a.fzoo_batched:
            self.batched = fzoo_batched.for_run(model, named, a.fzoo_n, self.count_forwards)
        self.ab = None   # layer selection / block scaling / trainer-optimizer path (src/mezo/zo_ablations.py)
        if a.zero_order_use_trainer_optim or zo_ablations.needs_state(a):
            layers = getattr(getattr(model, "config", None), "num_hidden_layers", 1)
            self.ab = zo_ablations.ZOAblation(named, layers, a, self.noise)

    def count_forwards(self, k: int) -> None:
        self.forwards += k

    def next_seed(self) -> int:
        return int(self.seeds.randint(1_000_000_000))

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

    # ----- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"zo_seeds": random_state_to_tensors(self.seeds),
                "counters": {"zo_skipped": self.skipped, "zo_forwards": self.forwards},
                "zo_ab": self.ab.state_dict() if hasattr(self.ab, "state_dict") else None,
                # --zo_method's own state (momentum, Adam moments, HiZOO's Sigma, LOZO's V seeds)
                "zo_method": self.method.state_dict() if self.method is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("zo_seeds") is not None:
            set_random_state(self.seeds, state["zo_seeds"])
        counters = state.get("counters", {})
        self.skipped = int(counters.get("zo_skipped", 0))
        self.forwards = int(counters.get("zo_forwards", 0))
        if state.get("zo_method") is not None:
            self.method.load_state_dict(state["zo_method"])
        if self.ab is not None:
            if state.get("zo_ab") is not None and hasattr(self.ab, "load_state_dict"):
                self.ab.load_state_dict(state["zo_ab"])
            else:
                logger.warning("resuming a MeZO ablation run whose ablation state is not checkpointed: "
                               "the continuation may differ from an uninterrupted run")
