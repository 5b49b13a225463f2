"""Every flag has a stated range (mezo.config.ranges): the table covers every field, its boundaries are the ones
restated literally below, and --help shows them."""
import dataclasses
import subprocess
import sys
from types import SimpleNamespace

import pytest
from transformers import TrainingArguments

from mezo.config.arguments import AdapterArguments, DataArguments, MezoTrainingArguments, ModelArguments
from mezo.config.ranges import NO_RANGE, RANGES, bad_field

nan, inf = float("nan"), float("inf")
# field: (values that must be refused, values that must pass) - the ranges restated by hand.
BOUNDS = {
    "lora_r": ([0, -1], [None, 1, 8]),
    "lora_alpha": ([0, -16], [None, 1, 16]),
    "max_seq_length": ([3, 0, -1], [4, 128, 512]),
    "num_k": ([0, -1], [1, 16]),
    "num_sample": ([0], [1, 16]),
    "demo_filter_rate": ([0, 0.0, -0.1, 1.0001, nan, inf], [1e-9, 0.5, 1]),
    "first_sent_limit": ([0], [None, 1, 40]),
    "other_sent_limit": ([0, -3], [None, 1]),
    "seed": ([-1, 2**32, nan], [0, 42, 2**32 - 1]),
    "data_seed": ([-1, 2**32], [None, 0, 2**32 - 1]),
    "learning_rate": ([-1e-9, nan, inf], [0, 1e-6]),
    "weight_decay": ([-0.1, nan, inf], [0, 0.1]),
    "momentum": ([-0.1, 1, 1.5, nan], [0, 0.9, 0.999]),
    "adam_beta1": ([1, -0.1, nan], [0, 0.9]),
    "adam_beta2": ([1.0, 2, nan], [0, 0.999]),
    "adam_epsilon": ([-1e-8, nan, inf], [0, 1e-8]),
    "max_grad_norm": ([nan], [1.0, 0, -1, inf]),
    "warmup_steps": ([-1, nan], [0, 0.1, 100]),
    "label_smoothing_factor": ([1, -0.1, nan], [0, 0.1]),
    "zero_order_eps": ([0, -1e-3, nan, inf], [1e-3, 1e-9]),
    "zo_max_skipped_steps": ([nan], [100, 0.5, 0, -1, inf]),
    "zo_check_sync_steps": ([-1], [0, 10]),
    "zero_order_sample": ([0, -2], [1, 4]),
    "max_zo_forward_steps": ([-1], [0, 100]),
    "num_prefix": ([0, -5], [1, 5]),
    "max_steps": ([0, -2, -5], [-1, 1, 100000]),
    "num_train_epochs": ([0, -1, nan, inf], [0.5, 3]),
    "per_device_train_batch_size": ([0, -1], [1, 64]),
    "per_device_eval_batch_size": ([0], [1]),
    "gradient_accumulation_steps": ([0], [1, 4]),
    "logging_steps": ([0, -1, nan], [1, 500, 0.1]),
    "eval_steps": ([0, -4], [None, 4]),
    "save_steps": ([-1, nan], [0, 3]),
    "save_total_limit": ([0, -1], [None, 1, 2]),
    "dataloader_num_workers": ([-1], [0, 2]),
    "zo_momentum": ([1, -0.1, nan], [0, 0.9]),
    "hizoo_alpha": ([-1e-6, nan, inf], [0, 1e-6]),
    "lozo_rank": ([0, -1], [1, 4]),
    "lozo_nu": ([0], [1, 50]),
    "lozo_beta1": ([1, -0.5], [0, 0.9]),
    "fzoo_n": ([1, 0], [2, 8]),
}


def test_boundaries_restated():
    assert set(BOUNDS) == set(RANGES)
    for name, (bad, good) in BOUNDS.items():
        for v in bad:
            assert bad_field(SimpleNamespace(**{name: v})) is not None, (name, v)
            assert bad_field(SimpleNamespace(**{name: v}))[0] == f"--{name}"
        for v in good:
            assert bad_field(SimpleNamespace(**{name: v})) is None, (name, v)
    assert bad_field(SimpleNamespace(seed=True)) is not None  # a bool is not a number here


def _own_fields():
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    redefined = set(vars(MezoTrainingArguments).get("__annotations__", {}))
    own = [f.name for f in dataclasses.fields(MezoTrainingArguments) if f.name not in inherited or f.name in redefined]
    return own + [f.name for g in (ModelArguments, DataArguments, AdapterArguments) for f in dataclasses.fields(g)]


def test_every_field_has_a_range_or_a_reason_exactly_once():
    listed = [n for names in NO_RANGE.values() for n in names]
    assert len(listed) == len(set(listed))
    assert not set(listed) & set(RANGES)
    own = set(_own_fields())
    missing = own - set(listed) - set(RANGES)
    assert not missing, sorted(missing)
    every = {f.name for g in (ModelArguments, DataArguments, MezoTrainingArguments, AdapterArguments)
             for f in dataclasses.fields(g)}
    assert set(RANGES) <= every and set(listed) <= every


def test_help_states_every_range(repo_root):
    from mezo.config.arguments import build_parser
    helps = {a.dest: a.help for a in build_parser()._actions}
    out = " ".join(subprocess.run([sys.executable, "run.py", "--help"], cwd=repo_root, capture_output=True,
                                  text=True).stdout.split())
    for name, (_, wording) in RANGES.items():
        assert helps[name].endswith(f"[range: {wording}]"), name
        assert " ".join(f"[range: {wording}]".split()) in out, name


@pytest.mark.parametrize("flag,value", [("--seed", "-1"), ("--demo_filter_rate", "0"), ("--num_prefix", "0")])
def test_range_error_before_any_file_is_read(tmp_path, capsys, flag, value):
    from mezo.cli import run
    rc = run.main(["--model_name_or_path", "/no/such/model", "--task_name", "mr", "--data_dir", "/no/such/dir",
                   "--output_dir", str(tmp_path / "o"), "--log_file", str(tmp_path / "log"), flag, value])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag} ") and "must be" in err[0]
    assert not (tmp_path / "log").exists() and not (tmp_path / "o").exists()
