"""--report_to tensorboard receives the MeZO step's scalars and the dev curve; the progress bar shows the dev score."""
import glob
import json
import os
import re

import pytest

from mezo.cli import run
import tiny
from mezo.training import monitor
from mezo.zo import methods as zo   # the optimizers call mezo_step from here
from mezo.zo.step import ZOStep

TEMPLATE = "*cls**sent_0*_It_was*mask*.*sep+*"
MAPPING = "{0:'terrible',1:'great'}"
LR = 1e-3


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return tiny.small_uci_split(tmp_path_factory.mktemp("data") / "uci-sentiment" / "16-42", 8)


def mezo_run(model_dir, data, out, *extra):
    return run.main(["--model_name_or_path", model_dir, "--task_name", "uci-sentiment", "--data_dir", data,
                     "--few_shot_type", "prompt", "--template", TEMPLATE, "--mapping", MAPPING,
                     "--output_dir", str(out), "--log_file", str(out / "log"), "--do_train", "--do_eval",
                     "--max_steps", "4", "--eval_steps", "2", "--evaluate_during_training", "--zero_order_optim",
                     "--efficient_zero_order", "--learning_rate", str(LR), "--per_device_train_batch_size", "8",
                     "--optimizer", "sgd", "--lr_scheduler_type", "constant", "--seed", "42",
                     "--per_device_eval_batch_size", "32", *extra])


@pytest.fixture
def step_spy(monkeypatch):
    """Every ZOStep that zo.mezo_step returns during the run, in order."""
    seen = []
    real = zo.mezo_step

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]
    monkeypatch.setattr(zo, "mezo_step", spy)
    return seen


def read_scalars(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    files = sorted(glob.glob(str(out / "runs" / "*" / "events.out.tfevents.*")))
    assert files, f"no event file under {out}/runs"
    scalars = {}
    for path in files:  # the final evaluation reopens the writer: a second file in the same folder
        acc = EventAccumulator(path)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                scalars.setdefault(tag, {}).setdefault(e.step, []).append(e.value)
    return scalars


def test_tensorboard_event_file_holds_the_mezo_scalars(tmp_path, small_data, tiny_bert_dir, one_thread, step_spy):
    assert mezo_run(tiny_bert_dir, small_data, tmp_path, "--report_to", "tensorboard", "--logging_steps", "2",
                    "--disable_tqdm", "true") == 0
    assert len(step_spy) == 4
    s = read_scalars(tmp_path)
    # Logging every 2 steps: each point is the mean over its two MeZO steps (float32 in the event file).
    for step, pair in ((2, step_spy[0:2]), (4, step_spy[2:4])):
        for tag, field in (("train/zo_loss_plus", "loss_plus"), ("train/zo_loss_minus", "loss_minus"),
                           ("train/zo_projected_grad", "grad")):
            assert s[tag][step] == pytest.approx([sum(getattr(p, field) for p in pair) / 2], rel=1e-6, abs=1e-7)
        assert s["train/loss"][step] == pytest.approx([sum(p.loss_plus for p in pair) / 2], rel=1e-5)
        assert s["train/zo_skipped_steps"][step] == [0]
        assert s["train/learning_rate"][step] == pytest.approx([LR])
        assert s["train/train_examples_per_s"][step][0] > 0
    assert sorted(s["train/zo_loss_plus"]) == [2, 4]
    # The dev curve: the evaluations at steps 2 and 4 (then the final one of run.py, at step 4 too).
    record = json.loads((tmp_path / "log").read_text())
    assert [st for st, _ in record["dev_curve"]] == [2, 4]
    assert s["eval/acc"][2] == pytest.approx([record["dev_curve"][0][1]])
    assert sorted(s["eval/acc"][4]) == pytest.approx(sorted([record["dev_curve"][1][1],
                                                             record["uci-sentiment_dev_eval_acc"]]))


def test_default_reports_nowhere(tmp_path, small_data, tiny_bert_dir, one_thread):
    assert mezo_run(tiny_bert_dir, small_data, tmp_path, "--disable_tqdm", "true", "--max_steps", "1",
                    "--logging_steps", "1") == 0
    assert not os.path.exists(tmp_path / "runs")


def test_progress_bar_shows_steps_eta_and_dev_score(tmp_path, small_data, tiny_bert_dir, one_thread, capsys):
    assert mezo_run(tiny_bert_dir, small_data, tmp_path) == 0
    err = capsys.readouterr().err
    curve = json.loads((tmp_path / "log").read_text())["dev_curve"]
    best_step, best = max(curve, key=lambda c: (c[1], -c[0]))  # the first strictly best
    frames = [f for f in re.split(r"[\r\n]", err) if f.strip().startswith("100%") and "4/4" in f]
    assert frames, err[-2000:]
    last = frames[-1]
    assert f"dev={curve[-1][1]:.4f} best={best:.4f}@{best_step}" in last
    assert re.search(r"4/4 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(step/s|s/step)", last), last


def test_window_means_skip_nonfinite_steps_and_reset():
    from types import SimpleNamespace
    run = SimpleNamespace(params=[object()], skipped=0)   # the parts of zo_run.ZORun the monitor reads
    args = SimpleNamespace(train_batch_size=16, gradient_accumulation_steps=1, world_size=1)
    m = monitor.StepMonitor(run, monitor.examples_per_step(args, list(range(32))))
    m.busy = 2.0  # seconds inside the window's updates (on_step_begin .. on_step_end)
    m.record(ZOStep(1.0, 3.0, 10.0, False))
    m.record(ZOStep(float("nan"), 1.0, 0.0, True))
    run.skipped = 1
    m.record(ZOStep(2.0, 5.0, -4.0, False))
    logs = m.extend({"loss": 1.5, "learning_rate": 0.1}, 3)
    assert (logs["zo_loss_plus"], logs["zo_loss_minus"], logs["zo_projected_grad"]) == (1.5, 4.0, 3.0)
    assert logs["zo_skipped_steps"] == 1
    assert logs["train_examples_per_s"] == 3 * 16 / 2.0
    assert m.extend({"eval_acc": 0.5}, 3) == {"eval_acc": 0.5}  # evaluation logs pass unchanged
    logs = m.extend({"loss": 1.0}, 4)
    assert "zo_loss_plus" not in logs  # a new window: no step recorded yet


def test_throughput_counts_only_time_inside_updates():
    import time
    from types import SimpleNamespace
    m = monitor.StepMonitor(SimpleNamespace(params=[object()], skipped=0), examples_per_step=16)
    m.on_step_begin(None, None, None)
    time.sleep(0.05)
    m.on_step_end(None, None, None)
    time.sleep(0.2)  # an evaluation between steps: not counted
    rate = m.extend({"loss": 1.0}, 1)["train_examples_per_s"]
    assert 16 / 0.2 < rate <= 16 / 0.05
