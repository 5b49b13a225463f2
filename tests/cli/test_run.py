"""run.py end to end on the embedded model, and its handling of bad input."""
import json
import subprocess
import sys

import pytest

from mezo.cli import run
import tiny

TEMPLATE = "*cls**sent_0*_It_was*mask*.*sep+*"
MAPPING = "{0:'terrible',1:'great'}"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, repo_root):
    """The committed uci-sentiment 16-42 split with the test set cut to 40 sentences."""
    return tiny.small_uci_split(tmp_path_factory.mktemp("data") / "uci-sentiment" / "16-42", 40)


def _argv(data_dir, out, log, *extra):
    return ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", data_dir,
            "--few_shot_type", "prompt", "--template", TEMPLATE, "--mapping", MAPPING,
            "--output_dir", str(out), "--log_file", str(log), "--do_train", "--do_eval", "--do_predict",
            "--per_device_eval_batch_size", "64", "--seed", "42", "--num_k", "16", "--tag", "t",
            "--disable_tqdm", "true", *extra]


def test_mezo_run_appends_one_record(tmp_path, small_data):
    log = tmp_path / "log"
    rc = run.main(_argv(small_data, tmp_path / "out", log, "--max_steps", "4", "--eval_steps", "2",
                        "--evaluate_during_training", "--zero_order_optim", "--efficient_zero_order",
                        "--per_device_train_batch_size", "16", "--learning_rate", "1e-4",
                        "--optimizer", "sgd", "--lr_scheduler_type", "constant"))
    assert rc == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    for key in ("uci-sentiment_dev_eval_acc", "uci-sentiment_dev_eval_loss", "uci-sentiment_test_eval_acc",
                "uci-sentiment_test_eval_loss"):
        assert 0 <= rec[key] < 10
    assert rec["task_name"] == "uci-sentiment" and rec["global_step"] == 4 and rec["seed"] == 42
    assert rec["zero_order_optim"] is True and rec["lr_scheduler_type"] == "constant"
    assert [s for s, _ in rec["dev_curve"]] == [2, 4] and rec["zo_forward_steps"] == 8
    assert rec["trainable_params"] > 4_000_000 and rec["peak_memory_bytes"] > 0
    assert (tmp_path / "out" / "test_results_uci-sentiment.txt").read_text().startswith("eval_loss = ")


def test_zero_shot_record(tmp_path, small_data):
    log = tmp_path / "log"
    assert run.main(_argv(small_data, tmp_path / "out", log, "--no_train")) == 0
    rec = json.loads(log.read_text())
    assert "global_step" not in rec and rec["no_train"] is True
    assert rec["uci-sentiment_test_eval_acc"] >= 0


BAD = [
    (["--task_name", "nope"], "--task_name nope"),
    (["--data_dir", "/no/such/dir"], "--data_dir /no/such/dir"),
    (["--template", "*cls**sent_0*_It_was.*sep+*"], "--template"),
    (["--template", "*cls**+sent-_0**mask*"], "*+sent-_0*"),
    (["--mapping", "{0:'terrible'"], "--mapping"),
    (["--mapping", "{'0':'terrible','1':'great'}", "--task_name", "SST-2"], "--data_dir"),
    (["--mapping", "{0:'terrible',1:'great',2:'okay'}"], "--mapping"),
    (["--mapping", "{0:'zzzqqqxx',1:'great'}"], "not a single token"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0"),
    (["--learning_rate", "-1"], "--learning_rate -1"),
    (["--zero_order_eps", "0"], "--zero_order_eps 0"),
    (["--max_steps", "0"], "--max_steps 0"),
    (["--evaluate_during_training"], "--eval_steps"),
    (["--apply_lora"], "--apply_lora"),
    (["--sfc"], "--sfc"),
    (["--few_shot_type", "prompt-demo", "--num_demo", "2"], "--num_demo"),
]


@pytest.mark.parametrize("extra,needle", BAD, ids=[b[1] for b in BAD])
def test_bad_input_exit_2_one_line_log_untouched(tmp_path, small_data, capsys, extra, needle):
    log = tmp_path / "log"
    log.write_text('{"existing": 1}\n')
    argv = _argv(small_data, tmp_path / "out", log, "--max_steps", "2") + extra
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert log.read_text() == '{"existing": 1}\n'


def test_cli_error_has_no_traceback(tmp_path, small_data, repo_root):
    p = subprocess.run([sys.executable, "run.py", *_argv(small_data, tmp_path / "o", tmp_path / "log",
                                                        "--mapping", "{0:'terrible'}")],
                       cwd=repo_root, capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.strip().splitlines()[-1].startswith("error: --mapping")
    assert not (tmp_path / "log").exists()
