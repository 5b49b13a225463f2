import io
import json
import math
import subprocess
import sys

import pytest

from mezo.experiments import results
from mezo.errors import RecordNotAppended
from mezo.experiments import gather as gather_result


def _rec(task, seed, data_seed, lr, dev, test, tag="k16-m-mezo-ft", out=None):
    return {"time": "t", "output_dir": out or f"result/{tag}-lr{lr}/16-{data_seed}-{seed}",
            f"{task}_dev_eval_acc": dev, f"{task}_test_eval_acc": test,
            f"{task}_dev_eval_loss": 0.5, f"{task}_test_eval_loss": 0.25,
            "task_name": task, "tag": tag, "num_k": 16, "seed": seed,
            "data_dir": f"data/k-shot-1k-test/{task}/16-{data_seed}", "learning_rate": lr,
            "per_device_train_batch_size": 64}


def test_append_and_read_roundtrip(tmp_path):
    log = tmp_path / "log"
    a = _rec("sst-2", 13, 13, 1e-6, 0.8, 0.9)
    b = dict(a, extra=[1, 2], note="x\ny")
    results.append_record(str(log), a)
    results.append_record(str(log), b)
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["note"] == "x\ny"
    assert results.read_records(str(log)) == [a, b]


def test_record_keys_and_json_safety():
    import enum
    import torch

    class E(enum.Enum):
        CONSTANT = "constant"

    class G:  # a stand-in for an argument dataclass
        pass
    from dataclasses import make_dataclass
    D = make_dataclass("D", [("lr_scheduler_type", object), ("device", object), ("x", float)])
    rec = results.make_record("sst-2", "out", {"eval_acc": 0.5, "eval_loss": 0.7}, {"eval_acc": 0.75},
                              (D(E.CONSTANT, torch.device("cpu"), float("nan")),))
    assert rec["sst-2_dev_eval_acc"] == 0.5 and rec["sst-2_dev_eval_loss"] == 0.7
    assert rec["sst-2_test_eval_acc"] == 0.75
    assert rec["lr_scheduler_type"] == "constant" and rec["device"] == "cpu" and rec["x"] == "nan"
    json.dumps(rec, allow_nan=False)


def test_reads_original_dict_repr_lines_without_eval(tmp_path):
    line = ("{'time': '2023-01-01', 'output_dir': 'result/x', 'sst-2_dev_eval_acc': 0.9, "
            "'sst-2_test_eval_acc': 0.88, 'lr_scheduler_type': <SchedulerType.CONSTANT: 'constant'>, "
            "'_n_gpu': 1, 'device': device(type='cuda', index=0), 'max_grad_norm': inf, 'x': nan, "
            "'tag': 'k16-roberta-large-mezo-ft'}")
    rec = results.parse_line(line)
    assert rec["sst-2_test_eval_acc"] == 0.88
    assert rec["lr_scheduler_type"] == "SchedulerType.CONSTANT: 'constant'"
    assert rec["device"] == "cuda:0" and math.isinf(rec["max_grad_norm"]) and rec["x"] is None
    with pytest.raises((ValueError, SyntaxError)):
        results.parse_line("{'a': __import__('os').system('true')}")


def test_damaged_line_skipped_with_warning(tmp_path, capsys):
    log = tmp_path / "log"
    results.append_record(str(log), _rec("sst-2", 13, 13, 1e-6, 0.8, 0.9))
    with open(log, "a") as f:
        f.write('{"truncated": \n')
    results.append_record(str(log), _rec("sst-2", 21, 21, 1e-6, 0.7, 0.6))
    recs = results.read_records(str(log))
    assert [r["seed"] for r in recs] == [13, 21]
    assert f"{log}:2: damaged record skipped" in capsys.readouterr().err


def test_gather_picks_best_dev_per_seed_and_prints_population_std():
    recs = [
        _rec("sst-2", 13, 13, 1e-6, 0.80, 0.90),
        _rec("sst-2", 13, 13, 1e-5, 0.85, 0.70),   # best dev for seed 13 -> test 0.70
        _rec("sst-2", 21, 21, 1e-6, 0.60, 0.50),
        _rec("sst-2", 21, 21, 1e-5, 0.60, 0.80),   # tie on dev -> smallest output_dir (lr1e-05 < lr1e-06)
        _rec("sst-2", 42, 42, 1e-6, 0.70, 0.60, out="dup"),
        _rec("sst-2", 42, 42, 1e-6, 0.75, 0.65, out="dup"),  # same output_dir: later one replaces
        _rec("sst-2", 87, 87, 1e-6, 0.99, 0.99, tag="other"),
    ]
    out = io.StringIO()
    chosen = gather_result.gather(recs, {"task_name": "sst-2", "tag": ["k16-m-mezo-ft"]},
                                  "sst-2_dev_eval_acc", "sst-2_test_eval_acc", out=out)
    best = chosen[("k16-m-mezo-ft", 16)]
    assert [b["sst-2_test_eval_acc"] for b in best] == [0.70, 0.80, 0.65]
    text = out.getvalue()
    # mean 71.67, population std 6.24, median 70.0
    # #runs: the de-duplicated runs of the seeds shown, a float sum as in the reference
    assert "mean +- std: 71.7 (6.2) (#seeds 3) (#runs 5.0) (median 70.0) | loss: 0.2500 (0.0000)" in text
    assert "42-42: best dev (0.75000, loss=0.5000) test (0.65000, loss=0.2500)  | total trials: 1 (ignored 1)" in text
    assert "Tag: other" not in text


def test_gather_cli_on_log(tmp_path, repo_root):
    log = tmp_path / "log"
    for r in (_rec("uci-sentiment", 13, 13, 1e-3, 0.8, 0.9), _rec("uci-sentiment", 21, 21, 1e-3, 0.8, 0.7)):
        results.append_record(str(log), r)
    cmd = [sys.executable, "tools/gather_result.py", "--log", str(log),
           "--condition", "{'task_name': 'uci-sentiment'}"]
    p = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "mean +- std: 80.0 (10.0) (#seeds 2) (#runs 2.0) (median 80.0)" in p.stdout
    bad = subprocess.run(cmd[:-1] + ["{'task_name': __import__('os')}"], cwd=repo_root,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --condition")


def test_save_record_appends_when_it_can(tmp_path):
    log = tmp_path / "log"
    assert results.save_record(str(log), {"a": 1}, str(tmp_path / "out")) == str(log)
    assert log.read_text() == '{"a": 1}\n' and not (tmp_path / "out").exists()


def test_save_record_falls_back_to_output_dir_then_tmp_then_stdout(tmp_path, monkeypatch, capsys):
    log = tmp_path / "logdir"
    log.mkdir()  # appending to a folder fails
    out = tmp_path / "out"
    with pytest.raises(RecordNotAppended, match=f"it is saved in {out}/record.json"):
        results.save_record(str(log), {"a": 1}, str(out))
    assert json.loads((out / "record.json").read_text()) == {"a": 1}

    blocked = tmp_path / "blocked"
    (blocked / "record.json.tmp").mkdir(parents=True)  # the output folder cannot take it either
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(results.tempfile, "gettempdir", lambda: str(tmp))
    with pytest.raises(RecordNotAppended) as e:
        results.save_record(str(log), {"b": 2}, str(blocked))
    saved, = tmp.iterdir()
    assert f"it is saved in {saved}" in str(e.value) and json.loads(saved.read_text()) == {"b": 2}

    file_not_dir = tmp_path / "file"
    file_not_dir.write_text("")
    monkeypatch.setattr(results.tempfile, "gettempdir", lambda: str(file_not_dir))
    with pytest.raises(RecordNotAppended, match="printed on stdout above"):
        results.save_record(str(log), {"c": 3}, str(blocked))
    assert capsys.readouterr().out == '{"c": 3}\n'
