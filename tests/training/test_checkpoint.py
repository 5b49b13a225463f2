"""Checkpoints: `kill -9` of a real `python run.py` process, then `--resume_from_checkpoint auto`, ends with
the parameters and the log record of an uninterrupted run (MeZO and Adam); writes are atomic."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import tiny
import torch

from mezo.cli import run
from mezo.training import checkpoint
from mezo.training import zo_run
from mezo.zo import optim as zo_optim

# Record fields that may differ between an uninterrupted and a killed-and-resumed run.

# Runs run.py's main in a child process; optionally slows every step down (numerics untouched) so an
# outside kill lands mid-training, or kills itself with SIGKILL at a chosen point of a checkpoint write.
DRIVER = r"""
import os, signal, sys, time
from mezo.cli import run
from mezo.training import checkpoint
from mezo.training import zo_run
from mezo.zo import optim as zo_optim
from mezo.training.callbacks import DataOrder
from mezo.training.trainer import MezoTrainer
mode = os.environ.get("KILL_MODE", "")
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "slow":
    DataOrder.on_step_end = lambda self, *a, **k: time.sleep(0.08)
elif mode.startswith("before_rename:"):      # tmp folder complete and fsynced, not yet renamed
    name = ".tmp-checkpoint-" + mode.split(":")[1]
    fsync = checkpoint._fsync_path
    def patched(path):
        fsync(path)
        if os.path.basename(path) == name:
            die()
    checkpoint._fsync_path = patched
elif mode.startswith("mid_write:"):          # trainable weights written, the rest not
    step = int(mode.split(":")[1])
    extra = MezoTrainer.extra_state
    def patched(trainer):
        if trainer.state.global_step == step:
            die()
        return extra(trainer)
    MezoTrainer.extra_state = patched
elif mode.startswith("in_remove:"):          # old checkpoint renamed away, not yet deleted
    step = int(mode.split(":")[1])
    def patched(path, out):
        os.rename(path, os.path.join(out, ".trash-" + os.path.basename(path)))
        if checkpoint.step_of(path) == step:
            die()
        checkpoint.shutil.rmtree(os.path.join(out, ".trash-" + os.path.basename(path)))
    checkpoint._remove = patched
sys.exit(run.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, repo_root):
    return tiny.small_uci_split(tmp_path_factory.mktemp("ckdata") / "uci-sentiment" / "16-42", 24)


STEPS = 24  # 32 training examples, batch 8: 4 steps per epoch, 6 epochs


def argv(model_dir, data_dir, out, log, kind, *extra):
    return tiny.checkpointed_run_argv(model_dir, data_dir, out, log, kind, STEPS, *extra)


class Children:
    """All killed runs start at once (their imports overlap the in-process reference runs)."""

    def __init__(self, root, model_dir, data_dir, repo_root, specs):
        self.root, self.procs, self.threads = root, {}, {}
        for name, (kind, mode) in specs.items():
            out, log = root / name, root / f"{name}.log"
            env = dict(os.environ, KILL_MODE=mode)
            with open(root / f"{name}.stderr", "w") as err:  # a file: a full pipe would stall the child
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-c", DRIVER, *argv(model_dir, data_dir, out, log, kind)], cwd=repo_root,
                    env=env, stdout=subprocess.DEVNULL, stderr=err)
            if mode == "slow":
                t = threading.Thread(target=self._kill_after_checkpoint, args=(name, out), daemon=True)
                t.start()
                self.threads[name] = t

    def _kill_after_checkpoint(self, name, out):
        """kill -9 at a random moment once a checkpoint exists (maybe while the next one is written)."""
        p = self.procs[name]
        while p.poll() is None and not checkpoint.list_checkpoints(str(out)):
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL)

    def wait(self, name):
        p = self.procs[name]
        p.wait(timeout=300)
        if name in self.threads:
            self.threads[name].join()
        err = (self.root / f"{name}.stderr").read_text()
        assert p.returncode == -signal.SIGKILL, (p.returncode, err[-3000:])
        return self.root / name, self.root / f"{name}.log"


@pytest.fixture(scope="module")
def children(tmp_path_factory, tiny_roberta_dir, data_dir, repo_root):
    return Children(tmp_path_factory.mktemp("killed"), tiny_roberta_dir, data_dir, repo_root,
                    {"mezo-random": ("mezo", "slow"), "adam-before-rename": ("adam", "before_rename:6")})


def _uninterrupted(tmp_path_factory, tiny_roberta_dir, data_dir, kind):
    root = tmp_path_factory.mktemp(f"ref-{kind}")
    # --save_total_limit 100 keeps every checkpoint for the resume-from-any-step test
    assert run.main(argv(tiny_roberta_dir, data_dir, root / "out", root / "log", kind,
                         "--save_total_limit", "100")) == 0
    rec, = [json.loads(line) for line in (root / "log").read_text().splitlines()]
    return {"out": root / "out", "record": rec,
            "weights": torch.load(root / "out" / "trainable_weights.pt", weights_only=True)}


@pytest.fixture(scope="module")
def mezo_ref(children, tmp_path_factory, tiny_roberta_dir, data_dir):
    return _uninterrupted(tmp_path_factory, tiny_roberta_dir, data_dir, "mezo")


@pytest.fixture(scope="module")
def adam_ref(children, tmp_path_factory, tiny_roberta_dir, data_dir):
    return _uninterrupted(tmp_path_factory, tiny_roberta_dir, data_dir, "adam")


def _resume_and_compare(ref, out, log, model_dir, data_dir, kind):
    assert not log.exists() or log.read_text() == ""  # the killed run appended nothing
    rec = tiny.resume_and_compare(ref, out, log, argv(model_dir, data_dir, out, log, kind))
    assert len(checkpoint.list_checkpoints(str(out))) <= 2  # --save_total_limit defaults to 2
    assert not [n for n in os.listdir(out) if n.startswith((".tmp-", ".trash-"))]
    return rec


def test_kill9_mezo_anywhere_then_resume_is_bit_identical(children, mezo_ref, tiny_roberta_dir, data_dir):
    out, log = children.wait("mezo-random")
    rec = _resume_and_compare(mezo_ref, out, log, tiny_roberta_dir, data_dir, "mezo")
    assert rec["zo_forward_steps"] == 2 * STEPS and rec["zo_skipped_steps"] == 0


def test_kill9_adam_while_writing_checkpoint_then_resume_is_bit_identical(children, adam_ref, tiny_roberta_dir,
                                                                          data_dir):
    out, log = children.wait("adam-before-rename")
    assert os.path.isdir(out / ".tmp-checkpoint-6") and not os.path.exists(out / "checkpoint-6")
    assert checkpoint.list_checkpoints(str(out))[-1][1] == str(out / "checkpoint-3")  # mid-epoch (step 3 of 4)
    _resume_and_compare(adam_ref, out, log, tiny_roberta_dir, data_dir, "adam")


@pytest.mark.parametrize("step", [12, 21])  # an epoch boundary, mid-epoch after the last evaluation
def test_resume_from_any_checkpoint_of_the_uninterrupted_run(tmp_path, mezo_ref, tiny_roberta_dir, data_dir, step):
    out = tmp_path / "out"
    shutil.copytree(mezo_ref["out"] / f"checkpoint-{step}", out / f"checkpoint-{step}")
    _resume_and_compare(mezo_ref, out, tmp_path / "log", tiny_roberta_dir, data_dir, "mezo")


@pytest.mark.slow
@pytest.mark.parametrize("kind,mode", [("adam", "slow"), ("mezo", "before_rename:6"), ("mezo", "mid_write:9"),
                                       ("mezo", "in_remove:3"), ("adam", "in_remove:3")])
def test_kill9_more_moments(tmp_path, request, tiny_roberta_dir, data_dir, repo_root, kind, mode):
    ref = request.getfixturevalue(f"{kind}_ref")
    more = Children(tmp_path, tiny_roberta_dir, data_dir, repo_root, {"run": (kind, mode)})
    out, log = more.wait("run")
    if mode != "slow":
        assert [n for n in os.listdir(out) if n.startswith((".tmp-", ".trash-"))]
    _resume_and_compare(ref, out, log, tiny_roberta_dir, data_dir, kind)


# ----- units ------------------------------------------------------------------------------------
def _fake(out, step, complete=True):
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if complete:
        (d / checkpoint.META).write_text("{}")
        (d / checkpoint.WEIGHTS).write_bytes(b"")
    return str(d)


def test_listing_ignores_incomplete_tmp_and_trash(tmp_path):
    _fake(tmp_path, 3)
    _fake(tmp_path, 12)
    _fake(tmp_path, 15, complete=False)  # e.g. copied by hand, half-way
    (tmp_path / ".tmp-checkpoint-18").mkdir()
    (tmp_path / ".trash-checkpoint-1").mkdir()
    assert [s for s, _ in checkpoint.list_checkpoints(str(tmp_path))] == [3, 12]
    assert checkpoint.list_checkpoints(str(tmp_path))[-1][1] == str(tmp_path / "checkpoint-12")
    assert checkpoint.list_checkpoints(str(tmp_path / "nothing")) == []


def test_rotate_keeps_newest_up_to_current_and_drops_abandoned_future(tmp_path):
    for s in (3, 6, 9, 12, 15):
        _fake(tmp_path, s)
    checkpoint.rotate(str(tmp_path), 9, 2)  # resumed from 6, just wrote 9: 12 and 15 are another future
    assert [s for s, _ in checkpoint.list_checkpoints(str(tmp_path))] == [6, 9]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-6", "checkpoint-9"]


def test_auto_without_checkpoint_starts_fresh_with_a_log_line(tmp_path, caplog):
    import logging
    with caplog.at_level(logging.INFO):
        assert checkpoint.resolve("auto", str(tmp_path)) is None
    assert "no usable checkpoint in" in caplog.text and "starting from scratch" in caplog.text


def test_zo_seed_generator_state_roundtrip():
    import numpy as np
    a = np.random.RandomState(42)
    a.randint(1_000_000_000, size=7)
    a.standard_normal()  # leaves a cached gaussian
    b = np.random.RandomState(0)
    saved = zo_optim.random_state_to_tensors(a)
    torch.save(saved, "/dev/null")  # plain tensors / numbers: loadable with weights_only=True
    zo_optim.set_random_state(b, saved)
    assert a.randint(1_000_000_000, size=5).tolist() == b.randint(1_000_000_000, size=5).tolist()
    assert a.standard_normal() == b.standard_normal()


def test_run_defining_flags_come_from_field_metadata(tmp_path):
    """The resume fingerprint is every field marked RUN_DEFINING (plus the stock fields named in
    STOCK_RUN_DEFINING): a changed marked flag is refused by name, an unmarked one is not."""
    import dataclasses
    from mezo.config import arguments
    base = ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", "d",
            "--output_dir", str(tmp_path / "o")]
    groups = arguments.parse_args(base)
    marked = {f.name for g in groups for f in dataclasses.fields(g) if f.metadata.get(arguments.RUN_DEFINING)}
    fingerprint = checkpoint.args_fingerprint(*groups)
    assert set(fingerprint) == marked | set(arguments.STOCK_RUN_DEFINING)
    assert {"zo_method", "hizoo_alpha", "lora_r", "template", "learning_rate", "seed"} <= set(fingerprint)
    assert not {"output_dir", "log_file", "save_steps", "per_device_eval_batch_size", "resume_from_checkpoint",
                "report_to", "disable_tqdm"} & set(fingerprint)
    path = tmp_path / "checkpoint-3"
    path.mkdir()
    (path / checkpoint.META).write_text(json.dumps({"format": checkpoint.FORMAT, "args": fingerprint}))
    changed = arguments.parse_args(base + ["--hizoo_alpha", "1e-5", "--per_device_eval_batch_size", "64"])
    with pytest.raises(checkpoint.UsageError, match="written with --hizoo_alpha 1e-06, this run has --hizoo_alpha 1e-05"):
        checkpoint.check_compatible(str(path), *changed)
    checkpoint.check_compatible(str(path), *arguments.parse_args(base + ["--per_device_eval_batch_size", "64"]))
