"""The private Trainer seams of mezo.training.hf_private: fails when a transformers upgrade moves one.

Each check restates an assumption the adapter's code makes about the stock loop, read from the
installed transformers' own source, so an upgrade that breaks it fails here by name rather than
as a subtly different resumed run.
"""
import inspect
import pathlib
import re

from transformers import Trainer

from mezo.training import hf_private

PACKAGE = pathlib.Path(hf_private.__file__).parent.parent
ROOT = PACKAGE.parent.parent


def source(method: str) -> str:
    return inspect.getsource(getattr(Trainer, method))


def test_private_methods_exist_with_the_signatures_used():
    for name, params in {**hf_private.OVERRIDDEN, **hf_private.CALLED}.items():
        assert hasattr(Trainer, name), f"Trainer.{name} is gone"
        assert tuple(inspect.signature(getattr(Trainer, name)).parameters) == params, name


def test_the_loop_saves_and_resumes_through_the_overridden_methods():
    assert "self._load_from_checkpoint(resume_from_checkpoint" in source("train")
    assert "self._save_checkpoint(model, trial)" in source("_maybe_log_save_evaluate")


def test_loss_counters_are_reset_before_on_train_begin_and_read_after_training_step():
    """MezoTrainer puts a resumed run's counters back in its first training_step: valid only if
    the loop resets them before `on_train_begin` and accumulates only after `training_step`."""
    loop = source("_inner_training_loop")
    begin = loop.index("self.callback_handler.on_train_begin")
    for name in hf_private.LOOP_COUNTERS:
        assert re.search(rf"self\.{name} = ", loop[:begin]), name
    epoch = source("_run_epoch")
    assert epoch.index("self.training_step(") < epoch.index("self._tr_loss += tr_loss_step")


def test_a_model_already_wrapped_is_not_prepared_by_accelerate():
    """Data-parallel MeZO sets `model_wrapped` to a Replica so that no DistributedDataParallel is built."""
    prep = source("_prepare_for_training")
    assert "self._wrap_model(self.model_wrapped)" in prep
    assert "use_accelerator_prepare = model is self.model" in prep


def test_only_the_adapter_overrides_private_trainer_methods():
    """At most two private overrides, both in hf_private.py; every private Trainer name the package
    or run.py uses is declared there (and so checked above)."""
    declared = set(hf_private.OVERRIDDEN) | set(hf_private.CALLED) | set(hf_private.LOOP_COUNTERS)
    assert len(hf_private.OVERRIDDEN) <= 2
    for path in [*PACKAGE.rglob("*.py"), ROOT / "run.py", *(ROOT / "tools").glob("*.py")]:
        text = path.read_text()
        defined = {m for m in re.findall(r"^    def (_[a-z]\w*)\(", text, re.M) if hasattr(Trainer, m)}
        if path.name == "hf_private.py":
            assert defined == set(hf_private.OVERRIDDEN)
        else:
            assert not defined, f"{path.name} overrides private Trainer methods {defined}"
        used = {m for m in re.findall(r"\b(?:self|trainer|t)\.(_[a-z]\w*)", text)
                if hasattr(Trainer, m) or m in hf_private.LOOP_COUNTERS}
        if path.name != "hf_private.py":
            assert not used, f"{path.name} uses private Trainer names {used} outside the adapter"
        assert used <= declared, used - declared
