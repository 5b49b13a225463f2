"""Property-based tests (hypothesis): generated flag combinations and damaged data files either run (exit 0,
one record appended) or exit 2 with exactly one `error:` line - never a traceback, never a changed log.

Most generated inputs are invalid and fail in validation, before any model loads; the valid ones train
splade-tiny for at most 2 steps on a small split, so the CI profile stays around a minute. `-m slow` runs
many more examples (not derandomized). The CSV reader is also checked against pandas itself on generated
well-formed files (the reference reads them with `pd.read_csv(path, header=None)`).
"""
import contextlib
import csv
import io
import json
import math
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tiny

from mezo.cli import run
from mezo.data.tasks import PANDAS_NA, get_task

TEMPLATE = "*cls**sent_0*_It_was*mask*.*sep+*"
MAPPING = "{0:'terrible',1:'great'}"
LOG_BEFORE = b'{"existing": 1}\n'
SPLITS = ("train.csv", "dev.csv", "test.csv")

COMMON = dict(deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large])
CI = settings(max_examples=250, derandomize=True, **COMMON)
MANY = settings(max_examples=1500, **COMMON)

# Flag -> values, valid and invalid mixed; "{file}" / "{under_file}" / "{folder}" are paths made per example.
FLAGS = {
    "--max_steps": ["1", "2", "0", "-3", "x", "1.5", ""],
    "--per_device_train_batch_size": ["8", "4", "0", "-1", "abc"],
    "--per_device_eval_batch_size": ["32", "0"],
    "--learning_rate": ["1e-3", "0", "-1", "nan", "inf", "x"],
    "--seed": ["0", "42", "4294967295", "-1", "4294967296", "1e3"],
    "--max_seq_length": ["64", "3", "600", "-1"],
    "--first_sent_limit": ["20", "0"],
    "--zero_order_eps": ["1e-3", "0", "-1", "nan"],
    "--demo_filter_rate": ["0.5", "0", "2", "nan"],
    "--momentum": ["0", "0.9", "1", "-0.5"],
    "--num_k": ["16", "0", "-2", "8"],
    "--num_sample": ["0", "-1"],
    "--eval_steps": ["1", "0", "-1"],
    "--logging_steps": ["1", "0", "-5"],
    "--save_steps": ["0", "1", "-1", "nan"],
    "--save_total_limit": ["1", "0"],
    "--gradient_accumulation_steps": ["1", "0", "2"],
    "--warmup_steps": ["0", "-1", "1"],
    "--adam_beta1": ["0.9", "1", "-0.1"],
    "--weight_decay": ["0", "0.1", "-0.1", "inf"],
    "--lr_scheduler_type": ["constant", "linear", "bogus"],
    "--optimizer": ["sgd", "adam", "lion"],
    "--template": [TEMPLATE, "*cls**sent_0*", "*cls**mask*", "**", "*sent_9**mask*", "no stars",
                   "*cls**sent_0**mask**"],
    "--mapping": [MAPPING, "{0:'terrible'}", "{", "{0:'a',1:'b',2:'c'}", "[]", "{0:1,1:2}", "{0:'zzqqxxvv',1:'great'}"],
    "--task_name": ["uci-sentiment", "UCI-Sentiment", "nope", "sst-2", "trec", "sts-b"],
    "--few_shot_type": ["prompt", "finetune", "prompt-demo", "other"],
    "--log_file": ["{folder}", "{under_file}", "{file}.log"],
    "--output_dir": ["{file}", "{under_file}", "{folder}"],
    "--save_logit_dir": ["{file}", "{folder}"],
    "--resume_from_checkpoint": ["auto", "/no/such/checkpoint-1", "{folder}"],
    "--model_name_or_path": ["splade-tiny", "/no/such/model", "{folder}"],
    "--lora_r": ["8", "0"],
    "--num_prefix": ["5", "0", "600"],
    "--zero_order_sample": ["1", "0", "2"],
    "--zo_max_skipped_steps": ["nan", "1"],
    "--num_train_epochs": ["0", "nan"],
    "--data_seed": ["-1", "7"],
}
SWITCHES = ["--zero_order_optim", "--efficient_zero_order", "--evaluate_during_training", "--prefix_tuning",
            "--apply_lora", "--save_logit", "--no_train", "--no_predict", "--double_demo", "--save_at_last",
            "--head_tuning", "--zo_cache_z", "--sfc", "--overwrite_output_dir", "--not_a_flag"]

curated = st.sampled_from(sorted(FLAGS)).flatmap(lambda f: st.tuples(st.just(f), st.sampled_from(FLAGS[f])))
flag_value = st.one_of(
    curated, curated, curated,  # mostly the boundary values above
    st.tuples(st.sampled_from(sorted(FLAGS)), st.text(max_size=12)),  # any text at all as a value
    st.tuples(st.sampled_from(SWITCHES), st.sampled_from([None, None, "true", "false", "maybe"])),
)
damage = st.one_of(
    st.none(),
    st.tuples(st.just("truncate"), st.sampled_from(SPLITS), st.floats(0, 1)),
    st.tuples(st.just("insert"), st.sampled_from(SPLITS), st.floats(0, 1),
              st.sampled_from([b'"', b",", b"\n", b"\x00", b"\xff\xfe", b"\r", b",,", b'"x"y', b"\n\n"])),
    st.tuples(st.just("empty"), st.sampled_from(SPLITS)),
    st.tuples(st.just("delete"), st.sampled_from(SPLITS)),
    st.tuples(st.just("label"), st.sampled_from(SPLITS), st.sampled_from(["2", "-1", "x", "1.0", "", " 1", "NA"])),
    st.tuples(st.just("row"), st.sampled_from(SPLITS), st.sampled_from(["1,a,b", "1", '0,"open', "1,NA"])),
)


def _damage(folder, how):
    if how is None:
        return
    path = os.path.join(folder, how[1])
    data = open(path, "rb").read()
    kind = how[0]
    if kind == "truncate":
        data = data[:int(how[2] * len(data))]
    elif kind == "insert":
        at = int(how[2] * len(data))
        data = data[:at] + how[3] + data[at:]
    elif kind == "empty":
        data = b""
    elif kind == "delete":
        os.remove(path)
        return
    elif kind == "label":
        first, rest = data.split(b",", 1)
        data = how[2].encode() + b"," + rest
    elif kind == "row":
        data = data + how[2].encode() + b"\n"
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module", autouse=True)
def hub_offline():
    """A generated model name such as `0` is a valid hub id: fail at once instead of retrying the network."""
    import huggingface_hub.constants
    with pytest.MonkeyPatch.context() as m:
        m.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def clean_split(tmp_path_factory, repo_root):
    return tiny.small_uci_split(tmp_path_factory.mktemp("fuzzdata") / "clean", 24)


def _one_run(root, clean_split, pairs, how):
    work = tempfile.mkdtemp(dir=root)
    data = os.path.join(work, "uci-sentiment", "16-42")
    shutil.copytree(clean_split, data)
    _damage(data, how)
    a_file = os.path.join(work, "a_file")
    open(a_file, "w").close()
    paths = {"{file}": a_file, "{under_file}": os.path.join(a_file, "x"), "{folder}": data}
    log = os.path.join(work, "log")
    with open(log, "wb") as f:
        f.write(LOG_BEFORE)
    argv = ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", data,
            "--few_shot_type", "prompt", "--template", TEMPLATE, "--mapping", MAPPING, "--num_sample", "1",
            "--output_dir", os.path.join(work, "out"), "--log_file", log, "--do_train", "--do_eval", "--do_predict",
            "--max_steps", "1", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32",
            "--disable_tqdm", "true", "--report_to", "none"]
    for flag, value in pairs:
        argv.append(flag)
        if value is not None:
            argv.append(paths.get(value, value).replace("{file}", a_file))
    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(work)  # generated relative paths land in the example's folder, not in the repository
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = run.main(argv)  # an exception escaping main fails the test (hypothesis shows the input)
    finally:
        os.chdir(cwd)
    lines = err.getvalue().splitlines()
    if os.environ.get("FUZZ_RECORD"):  # for the report: every input class and what it prints
        with open(os.environ["FUZZ_RECORD"], "a") as f:
            f.write(json.dumps({"pairs": pairs, "damage": how and [str(x) for x in how], "rc": rc,
                                "error": [line for line in lines if line.startswith("error:")]}) + "\n")
    assert "Traceback" not in err.getvalue()
    used = os.path.join(work, argv[len(argv) - argv[::-1].index("--log_file")])  # the last --log_file wins
    after = open(log, "rb").read()
    made = open(used, "rb").read() if used != log and os.path.isfile(used) else None
    shutil.rmtree(work, ignore_errors=True)
    if rc == 2:
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], lines
        assert after == LOG_BEFORE and made is None
    else:
        assert rc == 0, (rc, lines)
        new = (after[len(LOG_BEFORE):] if used == log else made).decode().splitlines()
        assert (after if used == log else after + made).startswith(LOG_BEFORE)
        assert len(new) == 1 and "task_name" in json.loads(new[0])
    return rc


def _check(tmp_path_factory, clean_split, pairs, how):
    root = str(tmp_path_factory.getbasetemp())
    _one_run(root, clean_split, pairs, how)


@CI
@given(pairs=st.lists(flag_value, min_size=0, max_size=4), how=damage)
def test_fuzz_flags_and_damaged_data(tmp_path_factory, clean_split, one_thread, pairs, how):
    _check(tmp_path_factory, clean_split, pairs, how)


@pytest.mark.slow
@MANY
@given(pairs=st.lists(flag_value, min_size=0, max_size=6), how=damage)
def test_fuzz_flags_and_damaged_data_many(tmp_path_factory, clean_split, one_thread, pairs, how):
    _check(tmp_path_factory, clean_split, pairs, how)


# ----- the CSV reader against pandas itself ----------------------------------------------------------
cell = st.one_of(st.sampled_from(sorted(PANDAS_NA) + [" NA", "na", "Null", "none ", "n/a!", "NaN?"]),
                 st.text(alphabet="ab ,\"'\nNAnul#/-.", max_size=8))


@settings(max_examples=60, derandomize=True, **COMMON)
@given(rows=st.lists(st.tuples(st.sampled_from([0, 1]), cell), min_size=1, max_size=12))
def test_csv_reader_matches_pandas_read_csv(tmp_path_factory, rows):
    import pandas as pd
    folder = tempfile.mkdtemp(dir=str(tmp_path_factory.getbasetemp()))
    path = os.path.join(folder, "train.csv")
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    frame = pd.read_csv(path, header=None, dtype=str)  # dtype=str: compare texts as written
    expected = ["" if isinstance(v, float) and math.isnan(v) else v for v in frame[1]]
    got = get_task("mr").read_examples(folder, "train")
    assert [e.text_a for e in got] == expected
    assert [e.label for e in got] == [r[0] for r in rows]
