"""The Hugging Face Trainer, extended at its public seams for MeZO and for best-dev model selection.

Back-propagation (the paper's FT rows) is the stock training loop untouched. For MeZO,
`create_optimizer` returns the zeroth-order optimizer of --zo_method (a `torch.optim.Optimizer`,
``mezo.zo.methods``), so the stock scheduler sets its learning rate and the stock checkpoint
carries its state, and `training_step` builds the closure and calls `optimizer.step(closure)`.
The loop's own `optimizer.step()` that follows is then a no-op. Logging, progress bar and
stopping are the stock ones, so exactly `max_steps` updates happen. What a ZO run is made of is
`self.zo_run` (``mezo.training.zo_run``); the callbacks own their state (``mezo.training.callbacks``).

With `--zero_order_use_trainer_optim` the optimizer is the stock one and `training_step` adds the
SPSA estimate to `.grad` instead (``mezo.zo.estimator.SPSAGradient``); the stock scheduler,
accumulation and (only with `--zero_order_clip_grad`) clipping do the rest.

Public seams used: `training_step`, `create_optimizer`, `get_optimizer_cls_and_kwargs`,
`get_decay_parameter_names`, `get_train_dataloader`, `log`, callbacks and `model_wrapped`. The two
private ones (checkpoint save and resume) are in ``mezo.training.hf_private``, with every other
private name used.
"""
import logging
import math

import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from mezo.training import checkpoint
from mezo.training import distributed
from mezo.training import hf_private
from mezo.training import monitor
from mezo.zo import ablations as zo_ablations
from mezo.zo.losses import accumulated_loss
from mezo.training.callbacks import BestDevCallback, DataOrder
from mezo.data.datasets import original_train_sampler
from mezo.training.original_adamw import OriginalAdamW
from mezo.training.preempt import PreemptCallback
from mezo.training.zo_run import ZORun

logger = logging.getLogger(__name__)


# The original's weight-decay exemption for its torch optimizers: a case-sensitive substring test, so RoBERTa's `lm_head.layer_norm.weight` IS decayed.
ORIGINAL_NO_DECAY = ("bias", "LayerNorm.weight")


class Replica(torch.nn.Module):
    """Marks the model as already wrapped, so that accelerate does not put it in DDP."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


class MezoTrainer(hf_private.CheckpointSeams):
    """Trainer whose step is MeZO when `--zero_order_optim` is on, the stock backprop step otherwise."""

    def __init__(self, *args, dev_objective=None, arg_groups=None, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        self.run_arg_groups = arg_groups or (a,)   # what a checkpoint must match to be resumed
        self.best = BestDevCallback(dev_objective)
        self.data_order = DataOrder()
        self.zo_run = ZORun(self.model, a) if a.zero_order_optim else None
        self.zo_micro = []   # micro-batches of the current update (--gradient_accumulation_steps)
        self.pending_loop_counters = None   # a resumed run's loss accumulators, put back at its first step
        for callback in (self.best, self.data_order, PreemptCallback()):  # preempt: mezo.training.preempt
            self.add_callback(callback)
        # MeZO scalars in the logs, dev score on the progress bar (mezo.training.monitor)
        self.monitor = monitor.install(self, self.zo_run)
        if self.zo_run is not None:
            self.add_callback(self.zo_run)   # after BestDevCallback: its stop overrides the evaluation
        if self.zo and a.world_size > 1:
            # Data-parallel MeZO needs no DistributedDataParallel (nor its gradient buckets): a model
            # already wrapped is not prepared by accelerate (`model_wrapped` is the public attribute
            # the loop wraps from). Ranks share the step seed and exchange only the loss.
            self.model_wrapped = Replica(self.model)

    @property
    def zo(self) -> bool:
        """The direct MeZO path: the update happens inside `training_step`."""
        return self.args.zero_order_optim and not self.args.zero_order_use_trainer_optim

    def get_train_dataloader(self):
        """The original's data order (``data.original_train_sampler``; accelerate's seedable sampler
        would instead reseed every epoch with seed + epoch). Several processes: the stock loader."""
        if self.args.world_size > 1 or self.train_dataset is None:
            return super().get_train_dataloader()
        sampler = self.data_order.sampler = original_train_sampler(self.train_dataset, self.args)
        loader = DataLoader(self.train_dataset, batch_size=self.args.train_batch_size,
                            sampler=sampler, collate_fn=self.data_collator,
                            drop_last=self.args.dataloader_drop_last, num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    @staticmethod
    def get_optimizer_cls_and_kwargs(args, model=None):
        """`--optimizer adam`: the original's AdamW (mezo.training.original_adamw) unless --torch_adamw."""
        if args.optimizer == "adam" and not args.torch_adamw:
            return OriginalAdamW, {"lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2),
                                   "eps": args.adam_epsilon}
        return Trainer.get_optimizer_cls_and_kwargs(args, model)

    def get_decay_parameter_names(self, model) -> list:
        """The original's parameter groups, not the Trainer's (which also exempts every LayerNorm)."""
        return [n for n, _ in model.named_parameters() if not any(nd in n for nd in ORIGINAL_NO_DECAY)]

    def create_optimizer(self, model=None):
        """The zeroth-order optimizer on the direct MeZO path (``mezo.training.zo_run``), else the stock one."""
        if not self.zo:
            return super().create_optimizer(model)
        if self.optimizer is None:
            self.optimizer = self.zo_run.optimizer
        return self.optimizer

    # ----- the training step ------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.pending_loop_counters is not None:   # first step of a resumed run
            hf_private.set_loop_counters(self, self.pending_loop_counters)
            self.pending_loop_counters = None
        if not self.args.zero_order_optim:
            return super().training_step(model, inputs, num_items_in_batch)
        return self.zo_training_step(model, inputs)

    def zo_training_step(self, model, inputs) -> torch.Tensor:
        """One zeroth-order update in eval mode (dropout off), without autograd: the closure is the
        batch's loss (with --gradient_accumulation_steps n on the direct path: the update's n
        micro-batches, so it runs at the last one); the optimizer steps with it, or the estimator
        writes .grad for the stock optimizer the loop steps next."""
        model.eval()
        inputs = hf_private.prepare_inputs(self, inputs)
        closure = self.zo_closure(model, inputs)
        if closure is None:   # a micro-batch kept for the update's loss
            return torch.tensor(0.0, device=self.args.device)
        run, step = self.zo_run, self.state.global_step
        run.before_step(closure, lambda: self.loss_with_grad(model, inputs), step)
        if run.estimator is not None:
            accum, skipped = self.accumulation_steps(), run.estimator.skipped
            loss = run.estimator.backward(closure, global_step=step, max_steps=self.state.max_steps,
                                          grad_accum=accum)
            run.skipped += run.estimator.skipped - skipped
            run.after_update(step + 1, self.state.max_steps)
            return torch.tensor(loss / accum, device=self.args.device)
        run.optimizer.step(closure)
        return self.zo_logged_loss(run.optimizer.last)

    def loss_with_grad(self, model, inputs) -> torch.Tensor:
        """The loss with autograd (--zo_variant grad_norm's block constants)."""
        with self.compute_loss_context_manager():
            return self.compute_loss(model, inputs)

    def zo_model_loss(self, model, inputs) -> torch.Tensor:
        """The objective of one forward, without autograd (--fzoo_batched calls it under vmap)."""
        with torch.no_grad(), self.compute_loss_context_manager():
            if self.args.optimize_acc:
                _, out = self.compute_loss(model, inputs, return_outputs=True)
                return zo_ablations.minus_accuracy(out["logits"], inputs["labels"])
            return self.compute_loss(model, inputs)

    def zo_forward(self, model, inputs) -> torch.Tensor:
        """Loss of one forward pass in eval mode (dropout off), without autograd."""
        loss = self.zo_model_loss(model, inputs)
        self.zo_run.forwards += 1
        # Data-parallel MeZO: ranks share the step seed, so only the loss is exchanged.
        return distributed.global_mean(loss.detach(), len(inputs["input_ids"]))

    def accumulation_steps(self) -> int:
        return max(1, int(getattr(self, "current_gradient_accumulation_steps", 1) or 1))

    def zo_closure(self, model, inputs):
        """The closure of this update: one batch's loss, or on the direct path with
        --gradient_accumulation_steps n the size-weighted mean of the update's n micro-batch losses
        under the same perturbation (one seed), i.e. the full-batch loss with one micro-batch's
        activations; None until the last micro-batch arrives. The estimator path estimates per
        micro-batch (the original's accumulation of .grad)."""
        n = self.accumulation_steps()
        if self.zo_run.estimator is not None or (n == 1 and not self.zo_micro):
            return self.zo_batch_loss(model, inputs)
        self.zo_micro.append(inputs)
        if len(self.zo_micro) < n:
            return None
        parts = [(self.zo_batch_loss(model, b), len(b["input_ids"])) for b in self.zo_micro]
        self.zo_micro = []
        return accumulated_loss(parts)

    def zo_batch_loss(self, model, inputs):
        """One batch's loss_fn; with --fzoo_batched it also gives FZOO's N perturbed losses in one
        vmapped forward of the unwrapped model (``mezo.training.fzoo_batched``)."""
        loss_fn = lambda: self.zo_forward(model, inputs)  # noqa: E731
        if self.zo_run.batched is None:
            return loss_fn
        return self.zo_run.batched.wrap(loss_fn, lambda m: self.zo_model_loss(m, inputs), len(inputs["input_ids"]))

    def zo_logged_loss(self, step) -> torch.Tensor:
        """The loss the loop logs for a MeZO step; a skipped (non-finite) step is counted and logged."""
        self.monitor.record(step)
        if step.skipped:
            self.zo_run.skipped += 1
            logger.warning("step %d: non-finite MeZO loss (%s, %s); update skipped",
                           self.state.global_step, step.loss_plus, step.loss_minus)
        self.zo_run.after_update(self.state.global_step + 1, self.state.max_steps)
        return torch.tensor(float("nan") if step.skipped else step.loss_plus, device=self.args.device)

    def log(self, logs, *args, **kwargs):
        """Training logs carry the MeZO step's own scalars to every --report_to integration (mezo.training.monitor)."""
        super().log(self.monitor.extend(logs, self.state.global_step), *args, **kwargs)

    # ----- checkpoints (mezo.training.checkpoint): atomic, trainable parameters only, exact resume -----
    def save_run_checkpoint(self, trial=None):
        """Where the stock loop saves (hf_private.CheckpointSeams)."""
        return checkpoint.save(self, trial)

    def load_run_checkpoint(self, path: str) -> None:
        """Where the stock loop resumes (hf_private.CheckpointSeams), before `on_train_begin`."""
        extra = checkpoint.load(self, path)
        if self.zo_run is not None:
            self.zo_run.load_state_dict(extra)
        self.data_order.resume_state = extra.get("sampler")
        self.best.load_state_dict(extra["best"])
        self.pending_loop_counters = extra["loss"]  # the loop resets them after this; see training_step

    def extra_state(self) -> dict:
        """What a checkpoint carries beyond the stock files (mezo.training.checkpoint)."""
        return {**(self.zo_run.state_dict() if self.zo_run is not None else {}),
                "sampler": self.data_order.epoch_state,   # the data order as the current epoch began
                "best": self.best.state_dict(), "loss": hf_private.loop_counters(self)}

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
        if self.zo_run is not None:
            out.update(zo_skipped_steps=self.zo_run.skipped, zo_forward_steps=self.zo_run.forwards)
        if self.args.fzoo_batched:   # whether every step's N losses came from the batched forward
            b = self.zo_run.batched
            out["fzoo_batched_ran"] = b is not None and b.worked and b.disabled is None
        return out
