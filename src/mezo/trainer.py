"""The Hugging Face Trainer, extended at its seams for MeZO and for best-dev model selection.

Back-propagation (the paper's FT rows) is the stock training loop untouched. MeZO replaces only
`training_step`: two forward passes around an in-place, seeded perturbation (src/mezo/zo.py), and
the update applied there; the optimizer the loop then steps is a parameter-less placeholder that
only carries the learning rate for the scheduler. The loop, logging, progress bar and stopping
are the stock ones, so exactly `max_steps` updates happen.

With `--zero_order_use_trainer_optim` (ablations, src/mezo/zo_ablations.py) `training_step` instead
adds the SPSA estimate to `.grad` and the stock optimizer, scheduler, accumulation and (only with
`--zero_order_clip_grad`) clipping do the rest.
"""
import logging
import math
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from . import checkpoint, distributed, monitor, zo, zo_ablations, zo_methods
from .data import original_train_sampler
from .errors import TrainingDiverged
from .optim import OriginalAdamW
from .preempt import PreemptCallback

logger = logging.getLogger(__name__)


class LearningRateHolder(torch.optim.Optimizer):
    """A stateless optimizer: MeZO updates inside training_step; this only holds the lr."""

    def __init__(self, lr):
        super().__init__([torch.zeros(0)], {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        return None


def no_decay(name: str) -> bool:
    """Biases and LayerNorm weights, case-insensitively (RoBERTa's head uses `layer_norm`)."""
    lname = name.lower()
    return "bias" in lname or "layernorm" in lname or "layer_norm" in lname


# The original's weight-decay exemption for its torch optimizers (spec §5.1): a case-sensitive
# substring test, so RoBERTa's `lm_head.layer_norm.weight` IS decayed.
ORIGINAL_NO_DECAY = ("bias", "LayerNorm.weight")


class BestDevCallback(TrainerCallback):
    """Evaluate every `eval_steps` updates; keep a CPU copy of the first strictly-best weights."""

    def __init__(self, objective):
        self.objective = objective
        self.best_score = None
        self.best_step = None
        self.best_state = None
        self.curve = []  # (step, dev objective) of every evaluation during training
        self.training = False

    def on_train_begin(self, args, state, control, **kw):
        self.training = True

    def on_train_end(self, args, state, control, **kw):
        self.training = False

    def on_step_end(self, args, state, control, **kw):
        if args.evaluate_during_training and state.global_step % args.eval_steps == 0:
            control.should_evaluate = True

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
        if not self.training:
            return
        score = self.objective(metrics)
        self.curve.append((state.global_step, score))
        # As the original: the bar starts at -inf and only a strictly greater score replaces it,
        # so a NaN (e.g. Pearson of constant predictions) or -inf score is never kept.
        if score > (-math.inf if self.best_score is None else self.best_score):
            self.best_score, self.best_step = score, state.global_step
            # A real copy: `.cpu()` of a CPU tensor is the live tensor (spec §9 item 29).
            self.best_state = {n: p.detach().to("cpu", copy=True)
                               for n, p in model.named_parameters() if p.requires_grad}
            logger.info("new best dev %.5f at step %d", score, state.global_step)

    def restore(self, model) -> bool:
        """Load the best weights back; False (and the last weights kept) if none was taken."""
        if self.best_state is None:
            return False
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.best_state.items():
                params[name].copy_(value)
        return True


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


class EpochSamplerState(TrainerCallback):
    """Exact resumption of the original's data order: remembers (epoch, generator state) as each
    epoch begins; in a resumed run, puts the generator back to the start of the resumed epoch
    (a checkpoint taken at an epoch's last step resumes at the next epoch: one epoch is replayed)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kw):
        t = self.trainer
        if t.train_generator is None:
            return
        epoch = int(state.epoch or 0)
        if t.resume_sampler_state is not None:
            saved_epoch, saved = t.resume_sampler_state
            t.resume_sampler_state = None
            t.train_generator.set_state(saved)
            for _ in range(epoch - saved_epoch):
                for _ in t.train_sampler:   # one whole epoch of draws
                    pass
        t.epoch_sampler_state = (epoch, t.train_generator.get_state())


class Replica(torch.nn.Module):
    """Marks the model as already wrapped, so that accelerate does not put it in DDP."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def process_start_time() -> float:
    """When this process began (psutil: an accelerate dependency), so start-up counts the interpreter
    and the imports too; the import of this module where psutil is unusable."""
    try:
        import psutil
        return psutil.Process().create_time()
    except Exception:  # pragma: no cover - psutil ships with accelerate
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


class StartupClock(TrainerCallback):
    """Seconds from process start to the first training step (`startup_s` in the run's record)."""

    def __init__(self):
        self.start = process_start_time()
        self.seconds = None

    def on_step_begin(self, args, state, control, **kw):
        if self.seconds is None:
            self.seconds = time.time() - self.start


class MezoTrainer(Trainer):
    """Trainer whose step is MeZO when `--zero_order_optim` is on, the stock backprop step otherwise."""

    def __init__(self, *args, dev_objective=None, arg_groups=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_arg_groups = arg_groups or (self.args,)   # what a checkpoint must match to be resumed
        self.best = BestDevCallback(dev_objective)
        self.add_callback(self.best)
        self.add_callback(checkpoint.ResumeCallback(self))
        self.train_generator = self.train_sampler = None   # the data order (get_train_dataloader)
        self.epoch_sampler_state = None     # (epoch, generator state) as the current epoch began
        self.resume_sampler_state = None    # the same, read from a checkpoint being resumed
        self.add_callback(EpochSamplerState(self))
        self.add_callback(PreemptCallback(self))  # SIGTERM/SIGINT -> checkpoint, stop (src/mezo/preempt.py)
        self.monitor = monitor.install(self)  # MeZO scalars in the logs, dev score on the progress bar
        a = self.args
        self.zo = a.zero_order_optim and not a.zero_order_use_trainer_optim
        # --zero_order_use_trainer_optim: the ZO estimate goes to .grad, the stock optimizer updates.
        self.zo_trainer = a.zero_order_optim and a.zero_order_use_trainer_optim
        self.zo_ab = self.zo_method = None
        self.zo_micro = []   # micro-batches of the current update (--gradient_accumulation_steps)
        if self.zo or self.zo_trainer:
            # One seed per step from a generator seeded by --seed, as the reference does.
            self.zo_seeds = np.random.RandomState(a.seed)
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            self.zo_params = [p for _, p in named]
            self.zo_decay = [0.0 if a.zo_no_decay_bias_norm and no_decay(n) else a.weight_decay
                             for n, _ in named]
            self.zo_skipped = 0
            self.zo_forwards = 0
            self.noise = zo.default_noise(cache_z=a.zo_store_z)
            # --zo_method: a method that followed MeZO, on the same step (src/mezo/zo_methods.py)
            self.zo_method = None if a.zo_method == "mezo" else zo_methods.build_method(
                a.zo_method, self.zo_params, eps=a.zero_order_eps, weight_decay=self.zo_decay, **zo_method_kwargs(a))
            if self.zo_trainer or zo_ablations.needs_state(a):
                layers = getattr(getattr(self.model, "config", None), "num_hidden_layers", 1)
                self.zo_ab = zo_ablations.ZOAblation(named, layers, a, self.noise)
            self.add_callback(zo_ablations.ZOControl(self))

    def get_train_dataloader(self):
        """The original's data order (``data.original_train_sampler``; accelerate's seedable sampler
        would instead reseed every epoch with seed + epoch). Several processes: the stock loader."""
        if self.args.world_size > 1 or self.train_dataset is None:
            return super().get_train_dataloader()
        self.train_sampler = original_train_sampler(self.train_dataset, self.args)
        self.train_generator = self.train_sampler.generator
        loader = DataLoader(self.train_dataset, batch_size=self.args.train_batch_size,
                            sampler=self.train_sampler, collate_fn=self.data_collator,
                            drop_last=self.args.dataloader_drop_last, num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    @staticmethod
    def get_optimizer_cls_and_kwargs(args, model=None):
        """`--optimizer adam`: the original's AdamW (src/mezo/optim.py) unless --torch_adamw."""
        if args.optimizer == "adam" and not args.torch_adamw:
            return OriginalAdamW, {"lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2),
                                   "eps": args.adam_epsilon}
        return Trainer.get_optimizer_cls_and_kwargs(args, model)

    def get_decay_parameter_names(self, model) -> list:
        """The original's parameter groups, not the Trainer's (which also exempts every LayerNorm)."""
        return [n for n, _ in model.named_parameters() if not any(nd in n for nd in ORIGINAL_NO_DECAY)]

    # ----- MeZO -------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if not self.zo:
            return super().create_optimizer(model)
        if self.optimizer is None:
            self.optimizer = LearningRateHolder(self.args.learning_rate)
        return self.optimizer

    def zo_forward(self, model, inputs) -> torch.Tensor:
        """Loss of one forward pass in eval mode (dropout off), without autograd."""
        with torch.no_grad(), self.compute_loss_context_manager():
            if self.args.optimize_acc:
                _, out = self.compute_loss(model, inputs, return_outputs=True)
                loss = zo_ablations.minus_accuracy(out["logits"], inputs["labels"])
            else:
                loss = self.compute_loss(model, inputs)
        self.zo_forwards += 1
        # Data-parallel MeZO: ranks share the step seed, so only the loss is exchanged.
        return distributed.global_mean(loss.detach(), len(inputs["input_ids"]))

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.zo_trainer:
            return self.zo_trainer_step(model, inputs)
        if not self.zo:
            return super().training_step(model, inputs, num_items_in_batch)
        model.eval()
        inputs = self._prepare_inputs(inputs)
        if self.zo_ab is not None:
            return self.zo_ablation_direct_step(model, inputs)
        loss_fn = self._zo_update_loss(model, inputs)
        if loss_fn is None:   # a micro-batch kept for the update's loss (--gradient_accumulation_steps)
            return torch.tensor(0.0, device=self.args.device)
        seed = int(self.zo_seeds.randint(1_000_000_000))
        if self.zo_method is not None:
            return self._zo_loss(self.zo_method.step(loss_fn, seed, self._get_learning_rate()))
        step = zo.mezo_step(self.zo_params, loss_fn, self.noise, seed, eps=self.args.zero_order_eps,
                            lr=self._get_learning_rate(), weight_decay=self.zo_decay)
        return self._zo_loss(step)

    def _zo_update_loss(self, model, inputs):
        """The loss of this update: one batch, or with --gradient_accumulation_steps n the size-weighted
        mean of the update's n micro-batch losses under the same perturbation (one seed), i.e. the
        full-batch loss with one micro-batch's activations. None until the last micro-batch arrives."""
        n = max(1, int(getattr(self, "current_gradient_accumulation_steps", 1) or 1))
        if n == 1 and not self.zo_micro:
            return lambda: self.zo_forward(model, inputs)
        self.zo_micro.append(inputs)
        if len(self.zo_micro) < n:
            return None
        parts = [((lambda b=b: self.zo_forward(model, b)), len(b["input_ids"])) for b in self.zo_micro]
        self.zo_micro = []
        return zo_methods.accumulated_loss(parts)

    def _zo_loss(self, step) -> torch.Tensor:
        """The loss the loop logs for a MeZO step; a skipped (non-finite) step is counted and logged."""
        self.monitor.record(step)
        if step.skipped:
            self.zo_skipped += 1
            logger.warning("step %d: non-finite MeZO loss (%s, %s); update skipped",
                           self.state.global_step, step.loss_plus, step.loss_minus)
        self._zo_checks(self.state.global_step + 1)
        return torch.tensor(float("nan") if step.skipped else step.loss_plus, device=self.args.device)

    def _zo_checks(self, step: int) -> None:
        """After MeZO update `step`: stop past --zo_max_skipped_steps; every --zo_check_sync_steps
        compare the data-parallel replicas (both raise: no record)."""
        a = self.args
        limit = skip_limit(a.zo_max_skipped_steps, self.state.max_steps)
        if limit is not None and self.zo_skipped > limit:
            raise TrainingDiverged(
                f"--zo_max_skipped_steps {a.zo_max_skipped_steps:g}: {self.zo_skipped} of the first {step} "
                f"MeZO steps were skipped for a non-finite loss; stopping (fp16 weights or a bad "
                f"--zero_order_eps {a.zero_order_eps:g}? see README: fp16/bf16)")
        if a.zo_check_sync_steps and step % a.zo_check_sync_steps == 0:
            distributed.check_in_sync(self.zo_params, step)

    def _zo_next_seed(self) -> int:
        return int(self.zo_seeds.randint(1_000_000_000))

    def _zo_block_constants(self, model, inputs):
        """--zo_variant: (re)compute the block constants on this batch when an epoch starts."""
        def with_grad():
            with self.compute_loss_context_manager():
                return self.compute_loss(model, inputs)
        self.zo_ab.maybe_consts(lambda: self.zo_forward(model, inputs), with_grad, self._zo_next_seed)

    def zo_ablation_direct_step(self, model, inputs):
        """Direct MeZO update with --layer_wise_optim / --zo_variant (src/mezo/zo_ablations.py)."""
        self._zo_block_constants(model, inputs)
        seed = self._zo_next_seed()
        step = self.zo_ab.direct_step(lambda: self.zo_forward(model, inputs), seed=seed,
                                      lr=self._get_learning_rate(), weight_decay=self.zo_decay,
                                      global_step=self.state.global_step)
        return self._zo_loss(step)

    def zo_trainer_step(self, model, inputs):
        """--zero_order_use_trainer_optim: SPSA pair(s) in eval mode without autograd, theta restored
        after each, g z / (grad_accum n) added to .grad; the stock loop clips (only with
        --zero_order_clip_grad), steps the optimizer and the scheduler and zeroes the grads."""
        model.eval()
        inputs = self._prepare_inputs(inputs)
        self._zo_block_constants(model, inputs)
        accum = max(1, int(getattr(self, "current_gradient_accumulation_steps", 1) or 1))
        skipped = self.zo_ab.skipped
        loss = self.zo_ab.accumulate_step(lambda: self.zo_forward(model, inputs), self._zo_next_seed,
                                          global_step=self.state.global_step,
                                          max_steps=self.state.max_steps, grad_accum=accum)
        self.zo_skipped += self.zo_ab.skipped - skipped
        self._zo_checks(self.state.global_step + 1)
        return torch.tensor(loss / accum, device=self.args.device)

    def _wrap_model(self, model, training=True, dataloader=None):
        if self.zo and training and self.args.world_size > 1:
            # No DistributedDataParallel (and none of its gradient buckets) for MeZO.
            return Replica(self.model)
        return super()._wrap_model(model, training, dataloader)

    def log(self, logs, *args, **kwargs):
        """Training logs carry the MeZO step's own scalars to every --report_to integration (src/mezo/monitor.py)."""
        super().log(self.monitor.extend(logs), *args, **kwargs)

    # ----- checkpoints (src/mezo/checkpoint.py): atomic, trainable parameters only, exact resume -----
    def _save_checkpoint(self, model, trial):
        checkpoint.save(self, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        checkpoint.load(self, resume_from_checkpoint)

    # ----- model selection --------------------------------------------------------------------
    def restore_best(self) -> bool:
        restored = self.best.restore(self.model)
        if self.args.evaluate_during_training and not restored:
            logger.warning("no dev evaluation happened during training (max_steps < eval_steps?): "
                           "keeping the last weights")
        return restored

    def train_summary(self) -> dict:
        """Facts about the finished training for the result record."""
        out = {"global_step": self.state.global_step,
               "best_dev_step": self.best.best_step,
               "dev_curve": self.best.curve,
               "train_loss_curve": [(h["step"], h["loss"]) for h in self.state.log_history
                                    if "loss" in h and "step" in h and math.isfinite(h["loss"])]}
        if self.zo or self.zo_trainer:
            out.update(zo_skipped_steps=self.zo_skipped, zo_forward_steps=self.zo_forwards)
        return out
