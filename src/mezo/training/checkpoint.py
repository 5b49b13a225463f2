"""Crash-safe checkpoints (`--save_steps`) and exact resumption (`--resume_from_checkpoint PATH|auto`).

The stock Trainer loop does the resuming: `train(resume_from_checkpoint=...)` reloads the optimizer,
scheduler, AMP scaler and RNG states (python, NumPy global, torch CPU and CUDA) from their stock
files, restores the TrainerState (step, epoch, log history) and fast-forwards the data loader
(`skip_first_batches`) within the resumed epoch; the data-order generator is put back to its state
at the start of that epoch (single process; several processes use the seedable sampler, which orders
epoch e by `seed + e`). This module replaces only what the stock code gets wrong or lacks:

* `save` (called by the stock loop through MezoTrainer.save_run_checkpoint; mezo.training.hf_private):
  writes output_dir/checkpoint-<step>/ **atomically**: every file goes into
  `.tmp-checkpoint-<step>`, is fsynced, then the folder is renamed. Only the trainable parameters
  are written (not the whole model), plus `extra_state.pt` with what lives outside the stock state
  (`MezoTrainer.extra_state`): the ZO run's seed generator, counters and method state
  (mezo.training.zo_run), the data order, the best-dev callback (score, step, weights, dev curve) and
  the training-loss accumulators (so that `train_loss` and the logged losses match an
  uninterrupted run). `meta.json` (step, arguments that must not change) is written last. At most
  `--save_total_limit` (default 2) checkpoints are kept; older ones are first renamed away, then
  deleted, so a kill at any moment leaves at least one complete checkpoint.
* `load` (MezoTrainer.load_run_checkpoint): the trainable parameters; it returns `extra_state.pt`,
  which the trainer hands to the objects that own each part.
* `damage` (used by `resolve`): a checkpoint is usable only if meta.json parses, names its own step,
  every file it lists has the recorded size, and every torch file passes its zip CRC check.
  `auto` skips a damaged newest checkpoint with a warning and takes the one before; an explicit
  damaged path is a usage error.
* Preemption (mezo.training.preempt): SIGTERM/SIGINT writes one more checkpoint at the
  end of the step in flight and stops the run.
* No checkpoint is written at the last step: resuming there would need the stock loop to run zero
  steps mid-epoch, which it cannot; a run killed during its final evaluation redoes at most
  `--save_steps` steps.

Layout of checkpoint-<step>/: trainable_params.pt, extra_state.pt, optimizer.pt, scheduler.pt,
[scaler.pt], rng_state.pth, trainer_state.json, meta.json.
"""
import json
import logging
import os
import re
import shutil
import zipfile

import torch

from mezo.training import hf_private
from mezo.config.arguments import run_defining
from mezo.errors import UsageError
from mezo.experiments.results import json_safe

logger = logging.getLogger(__name__)

PREFIX = "checkpoint"
WEIGHTS = "trainable_params.pt"
EXTRA = "extra_state.pt"
META = "meta.json"
TRAINER_STATE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_LEFTOVER = re.compile(r"^\.(tmp|trash)-checkpoint-\d+")
# 2: the zeroth-order optimizer's state (seed stream, method state) is in the stock optimizer.pt
FORMAT = 2

# ----- finding checkpoints ----------------------------------------------------------------------
def step_of(path: str):
    m = _NAME.match(os.path.basename(os.path.normpath(path)))
    return int(m.group(1)) if m else None


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, META)) and os.path.isfile(os.path.join(path, WEIGHTS))


def list_checkpoints(output_dir: str):
    """Complete checkpoints in output_dir as (step, path), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = _NAME.match(name)
        path = os.path.join(output_dir, name)
        if m and os.path.isdir(path) and is_complete(path):
            found.append((int(m.group(1)), path))
    return sorted(found)


def read_meta(path: str) -> dict:
    with open(os.path.join(path, META)) as f:
        return json.load(f)


def damage(path: str):
    """Why the checkpoint folder `path` cannot be resumed from (one phrase), or None if it looks whole."""
    if not is_complete(path):
        return f"no {META} or {WEIGHTS}"
    try:
        meta = read_meta(path)
    except (OSError, ValueError) as e:
        return f"unreadable {META} ({str(e).splitlines()[0]})"
    if isinstance(meta, dict) and isinstance(meta.get("format"), int) and meta["format"] != FORMAT:
        return (f"checkpoint format {meta['format']}, this version reads {FORMAT} (written by an older "
                "version: restart the run)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return f"{META} is not a format-{FORMAT} checkpoint description"
    step = step_of(path)
    if step is not None and meta.get("global_step") != step:
        return f"{META} says step {meta.get('global_step')!r}"
    for name, size in (meta.get("files") or {}).items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return f"{name} is missing"
        if os.path.getsize(file) != size:
            return f"{name} has {os.path.getsize(file)} bytes, {size} were written"
    for name in sorted(os.listdir(path)):
        file = os.path.join(path, name)
        try:
            if name.endswith((".pt", ".pth", ".bin")):
                with zipfile.ZipFile(file) as z:
                    bad = z.testzip()
                if bad is not None:
                    return f"{name}: CRC error in {bad}"
            elif name.endswith(".json"):
                with open(file) as f:
                    json.load(f)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            return f"{name} is damaged ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None


def resolve(value, output_dir: str):
    """The checkpoint folder that --resume_from_checkpoint names, or None to start fresh."""
    if value in (None, "", "none", "None"):
        return None
    if value == "auto":
        named = []
        if os.path.isdir(output_dir):
            named = sorted((int(m.group(1)), os.path.join(output_dir, n)) for n in os.listdir(output_dir)
                           if (m := _NAME.match(n)) and os.path.isdir(os.path.join(output_dir, n)))
        for _, path in reversed(named):
            why = damage(path)
            if why is None:
                logger.info("--resume_from_checkpoint auto: resuming from %s", path)
                return path
            logger.warning("--resume_from_checkpoint auto: skipping damaged checkpoint %s (%s)", path, why)
        logger.info("--resume_from_checkpoint auto: no usable checkpoint in %s, starting from scratch", output_dir)
        return None
    if not os.path.isdir(value):
        raise UsageError(f"--resume_from_checkpoint {value}: no such folder")
    if not is_complete(value):
        raise UsageError(f"--resume_from_checkpoint {value}: not a complete checkpoint (no {META} or {WEIGHTS}; "
                         "pass a checkpoint-<step> folder, or auto)")
    why = damage(value)
    if why is not None:
        raise UsageError(f"--resume_from_checkpoint {value}: damaged checkpoint ({why})")
    logger.info("resuming from %s", value)
    return value


def args_fingerprint(*groups) -> dict:
    """The run-defining arguments (field metadata, mezo.config.fields.RUN_DEFINING), as JSON values."""
    return json.loads(json.dumps({name: json_safe(v) for name, v in run_defining(*groups).items()}))


def check_compatible(path: str, *groups) -> dict:
    """Refuse to resume a checkpoint written with other run-defining arguments (before any model loads)."""
    try:
        meta = read_meta(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"--resume_from_checkpoint {path}: unreadable {META} ({e})")
    if meta.get("format") != FORMAT:
        raise UsageError(f"--resume_from_checkpoint {path}: checkpoint format {meta.get('format')!r}, "
                         f"this version reads {FORMAT} (written by an older version: restart the run)")
    now = args_fingerprint(*groups)
    for name, value in meta.get("args", {}).items():
        if name in now and now[name] != value:
            raise UsageError(f"--resume_from_checkpoint {path}: written with --{name} {value!r}, "
                             f"this run has --{name} {now[name]!r}")
    return meta


# ----- writing ----------------------------------------------------------------------------------
def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str, output_dir: str) -> None:
    """Rename away (atomic), then delete: a kill never leaves a half-deleted checkpoint-<n>."""
    trash = os.path.join(output_dir, ".trash-" + os.path.basename(path))
    if os.path.exists(trash):
        shutil.rmtree(trash, ignore_errors=True)
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def save(trainer, trial=None) -> str:
    """Write checkpoint-<global_step> atomically and rotate; returns its path (None if skipped)."""
    state = trainer.state
    if state.max_steps and state.global_step >= state.max_steps:
        return None  # see the module docstring: never resume at the very end
    if not trainer.args.should_save:
        return None
    out = hf_private.output_dir(trainer, trial)
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):  # left over by a killed run
        if _LEFTOVER.match(name):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    final = os.path.join(out, f"{PREFIX}-{state.global_step}")
    tmp = os.path.join(out, f".tmp-{PREFIX}-{state.global_step}")
    os.makedirs(tmp)

    weights = {n: p.detach().to("cpu", copy=True) for n, p in trainer.model.named_parameters() if p.requires_grad}
    torch.save(weights, os.path.join(tmp, WEIGHTS))
    torch.save(trainer.extra_state(), os.path.join(tmp, EXTRA))
    hf_private.save_stock_state(trainer, tmp)
    trainer.store_flos()
    state.save_to_json(os.path.join(tmp, TRAINER_STATE))
    groups = trainer.run_arg_groups
    meta = {"format": FORMAT, "global_step": state.global_step, "epoch": state.epoch,
            "max_steps": state.max_steps, "train_examples": len(trainer.train_dataset),
            "trainable": {n: list(t.shape) for n, t in weights.items()},
            "args": args_fingerprint(*groups),
            "files": {n: os.path.getsize(os.path.join(tmp, n)) for n in sorted(os.listdir(tmp))}}
    with open(os.path.join(tmp, META), "w") as f:
        json.dump(meta, f, indent=1)
    for name in os.listdir(tmp):
        _fsync_path(os.path.join(tmp, name))
    _fsync_path(tmp)
    if os.path.exists(final):  # an older attempt's checkpoint of the same step
        _remove(final, out)
    os.rename(tmp, final)
    _fsync_path(out)
    rotate(out, state.global_step, trainer.args.save_total_limit)
    logger.info("checkpoint written: %s", final)
    return final


def rotate(output_dir: str, current: int, limit) -> None:
    """Keep the `limit` newest checkpoints up to `current`; drop any later one (an abandoned future)."""
    limit = 2 if limit is None else limit
    if limit <= 0:
        return
    found = [(s, p) for s, p in list_checkpoints(output_dir)]
    older = [(s, p) for s, p in found if s <= current]
    stale = [p for s, p in found if s > current] + [p for _, p in older[:-limit]]
    for path in stale:
        _remove(path, output_dir)


# ----- reading ----------------------------------------------------------------------------------
def load(trainer, path: str) -> dict:
    """Load the trainable parameters; return the extra state (the trainer hands it to its owners).
    The stock loop loads the rest."""
    if not is_complete(path):
        raise UsageError(f"--resume_from_checkpoint {path}: not a complete checkpoint")
    meta = read_meta(path)
    n_train = len(trainer.train_dataset)
    if meta.get("train_examples") not in (None, n_train):
        raise UsageError(f"--resume_from_checkpoint {path}: written for {meta['train_examples']} training "
                         f"examples, this run has {n_train}")
    weights = torch.load(os.path.join(path, WEIGHTS), map_location="cpu", weights_only=True)
    params = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    if set(weights) != set(params) or any(tuple(weights[n].shape) != tuple(p.shape) for n, p in params.items()):
        missing = sorted(set(params) - set(weights)) or sorted(set(weights) - set(params))
        raise UsageError(f"--resume_from_checkpoint {path}: its trainable parameters differ from this run's "
                         f"(e.g. {missing[:1] or 'shapes'})")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n])
    logger.info("resumed from %s (step %d)", path, meta["global_step"])
    return torch.load(os.path.join(path, EXTRA), map_location="cpu", weights_only=True)
