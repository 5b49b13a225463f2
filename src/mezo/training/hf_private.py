"""Every private part of the Hugging Face Trainer this project relies on, in one place.

Written against transformers 5.24.0 (pinned in requirements.txt); tests/training/test_hf_private.py fails
if any name below moves or changes its signature, or if the loop stops resetting its loss counters
before `on_train_begin`.

Why private at all: the stock checkpoint is not atomic and writes the whole model, and the stock
resume can only load a whole model; this project writes only the trainable parameters, atomically,
with the extra state a MeZO run needs (mezo.training.checkpoint). So exactly two Trainer methods are
overridden, here, each handing over to a public method of MezoTrainer. The rest is read or called:
the stock save helpers (so optimizer, scheduler, scaler and RNG files are the stock ones) and the
loop's loss counters (so a resumed run logs and reports the same losses as an uninterrupted one).
"""
from transformers import Trainer

OVERRIDDEN = {"_save_checkpoint": ("self", "model", "trial"),
              "_load_from_checkpoint": ("self", "resume_from_checkpoint", "model")}
CALLED = {"_save_optimizer_and_scheduler": ("self", "output_dir"), "_save_scaler": ("self", "output_dir"),
          "_save_rng_state": ("self", "output_dir"), "_get_output_dir": ("self", "trial"),
          "_prepare_inputs": ("self", "inputs")}
# Reset by the loop right before `on_train_begin`, read after each `training_step`.
LOOP_COUNTERS = ("_tr_loss", "_total_loss_scalar", "_globalstep_last_logged", "_initial_global_step")


class CheckpointSeams(Trainer):
    """The two private overrides: the stock loop's save and resume points, handed to public methods."""

    def _save_checkpoint(self, model, trial):
        self.save_run_checkpoint(trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        self.load_run_checkpoint(resume_from_checkpoint)


def save_stock_state(trainer: Trainer, folder: str) -> None:
    """The stock files of a checkpoint: optimizer, scheduler, AMP scaler, RNG states."""
    trainer._save_optimizer_and_scheduler(folder)
    trainer._save_scaler(folder)
    trainer._save_rng_state(folder)


def output_dir(trainer: Trainer, trial) -> str:
    return trainer._get_output_dir(trial=trial)


def prepare_inputs(trainer: Trainer, inputs):
    """The batch on the device, as the stock training step prepares it."""
    return trainer._prepare_inputs(inputs)


def loop_counters(trainer: Trainer) -> dict:
    """The training loop's loss accumulators (what `train_loss` and the logged `loss` are made of)."""
    return {"tr_loss": trainer._tr_loss.detach().to("cpu", copy=True),
            "total": float(trainer._total_loss_scalar),
            "last_logged": int(trainer._globalstep_last_logged),
            "initial_step": int(trainer._initial_global_step)}


def set_loop_counters(trainer: Trainer, saved: dict) -> None:
    """Put saved accumulators back; only valid after the loop reset them (i.e. from a training step)."""
    trainer._tr_loss = saved["tr_loss"].to(trainer._tr_loss.device)
    trainer._total_loss_scalar = saved["total"]
    trainer._globalstep_last_logged = saved["last_logged"]
    trainer._initial_global_step = saved["initial_step"]
