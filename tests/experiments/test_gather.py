"""tools/gather_result.py prints what the reference's gather prints, line for line.

The expected report is computed by `_reference_report`, a plain re-statement of the reference's
algorithm written here (not the tool's code), on a synthetic log with several tags, K, seeds
(first seen out of numeric order), grid points, duplicated output_dirs, a dev tie and a NaN dev."""
import math

import numpy as np
import pytest

from mezo.experiments import results
from mezo.experiments import gather as gather_result

NAN = float("nan")


def _reference_report(records, condition, key, test_key, test_key2="", args_to_care=None):
    """The reference's report as a list of lines."""
    lines = []
    groups = {}
    for item in records:
        ok = all(c in item and (item[c] in v if isinstance(v, list) else item[c] == v) for c, v in condition.items())
        if ok and test_key in item and key in item:
            groups.setdefault(item["data_dir"].split("-")[-1] + "-" + str(item["seed"]), []).append(item)
    every = [x for v in groups.values() for x in v]
    test_loss = test_key.split("_eval")[0] + "_eval_loss"
    dev_loss = test_loss.replace("test", "dev")
    for tag in sorted({x["tag"] for x in every}):
        for k in sorted({x["num_k"] for x in every}):
            lines.append(f"Tag: {tag}, K: {k}")
            dups = {s: [x for x in v if x["tag"] == tag and x["num_k"] == k] for s, v in groups.items()}
            dedup = {}
            for s, v in dups.items():
                by_dir = {}
                for x in v:
                    by_dir[x["output_dir"]] = x       # later replaces, position of the first kept
                dedup[s] = list(by_dir.values())
            best = {}
            for s, v in dedup.items():
                if v:
                    cand = sorted(v, key=lambda x: x["output_dir"])
                    b = cand[0]
                    for x in cand[1:]:
                        if x[key] > b[key]:           # what max() does: first maximum, NaN never wins/loses
                            b = x
                    best[s] = b
            if args_to_care is not None:
                seen = {a: [] for a in args_to_care}
                ran = {}
                for s, v in dedup.items():
                    ran[s] = []
                    for x in v:
                        for a in args_to_care:
                            if x[a] not in seen[a]:
                                seen[a].append(x[a])
                        ran[s].append(tuple(x[a] for a in args_to_care))
                todo = {"seeds": [], **{a + "s": [] for a in args_to_care}}
                n = 0
                for s in dedup:
                    lines.append(f"Missing configs for seed {s}")
                    grid = [()]
                    for a in args_to_care:
                        grid = [g + (v,) for g in grid for v in seen[a]]
                    for g in grid:
                        if g not in ran[s]:
                            todo["seeds"].append(s.split("-")[-1])
                            lines.append("\t" + "".join(f"{a}: {v} " for a, v in zip(args_to_care, g)))
                            for a, v in zip(args_to_care, g):
                                todo[a + "s"].append(str(v))
                            n += 1
                lines.append(f"Rerun {n} configs")
                lines += [f"{name}=({' '.join(v)})" for name, v in todo.items()]
            fields = args_to_care or gather_result.DEFAULT_ARGS
            for s, b in best.items():
                t2 = "test2 (%.5f)" % b[test_key2] if test_key2 else ""
                lines.append("%s: best dev (%.5f, loss=%.4f) test (%.5f, loss=%.4f) %s | total trials: %d (ignored %d)"
                             % (s, b[key], b[dev_loss], b[test_key], b[test_loss], t2, len(dedup[s]),
                                len(dups[s]) - len(dedup[s])))
                lines.append("    " + "".join("| {}: {} ".format(a, b.get(a, "")) for a in fields))
            s = "mean +- std: "
            if best:
                t = np.array([b[test_key] for b in best.values()])
                runs = np.array([float(len(dedup[x])) for x in best]).sum()
                s += "%.1f (%.1f) (#seeds %s) (#runs %s) (median %.1f)" % (
                    t.mean() * 100, t.std() * 100, len(t), runs, np.median(t) * 100)
                if test_key2:
                    t2 = np.array([b[test_key2] for b in best.values()])
                    s += " | second metric: %.1f (%.1f) (median %.1f)" % (t2.mean() * 100, t2.std() * 100,
                                                                        np.median(t2) * 100)
                loss = np.array([b[test_loss] for b in best.values()])
                s += " | loss: %.4f (%.4f)" % (loss.mean(), loss.std())
            lines += [s, ""]
    return lines


def _rec(task, data_seed, seed, lr, dev, test, tag="k16-m-mezo-ft", k=16, out=None, metrics=("acc",), **extra):
    rec = {"time": "t", "output_dir": out or f"result/{tag}-lr{lr}/{k}-{data_seed}-{seed}"}
    for i, m in enumerate(metrics):
        rec[f"{task}_dev_eval_{m}"] = dev if i == 0 else round(dev * 0.9, 6)
    rec[f"{task}_dev_eval_loss"] = round(1 - (0 if math.isnan(dev) else dev), 6)
    for i, m in enumerate(metrics):
        rec[f"{task}_test_eval_{m}"] = test if i == 0 else round(test * 0.8, 6)
    rec[f"{task}_test_eval_loss"] = round(2 - test, 6)
    rec.update({"task_name": task, "tag": tag, "num_k": k, "seed": seed,
                "data_dir": f"data/k-shot-1k-test/{task}/{k}-{data_seed}", "learning_rate": lr,
                "per_device_train_batch_size": 16, "weight_decay": 0.0})
    rec.update(extra)
    return rec


def _log(task, metrics=("acc",)):
    r = lambda *a, **kw: _rec(task, *a, metrics=metrics, **kw)  # noqa: E731
    return [
        r(87, 87, 1e-5, 0.70, 0.71),
        r(13, 13, 1e-5, 0.80, 0.90),
        r(100, 100, 1e-5, 0.60, 0.62),
        r(13, 13, 1e-6, 0.85, 0.70),                     # best of 13-13
        r(87, 87, 1e-6, 0.70, 0.50),                     # dev tie: the smaller output_dir (lr1e-05) wins
        r(100, 100, 1e-6, NAN, 0.99),                    # NaN dev never beats 0.60
        r(13, 13, 1e-6, 0.10, 0.11, out="dup"),
        r(13, 13, 1e-6, 0.95, 0.65, out="dup"),          # same output_dir: replaces the previous one
        r(21, 21, 1e-5, 0.50, 0.55),                     # 21-21 runs only one grid point
        r(13, 13, 1e-5, 0.75, 0.76, tag="k16-m-ft"),
        r(21, 21, 1e-5, 0.65, 0.67, tag="k16-m-ft", k=32),
        r(13, 13, 1e-5, 0.99, 0.99, tag="other"),
        _rec("sst-5", 13, 13, 1e-5, 0.99, 0.99),          # another task
        {k: v for k, v in r(42, 42, 1e-5, 0.9, 0.9).items() if "_test_eval_" not in k},   # no test: skipped
    ]


def _write(tmp_path, recs, fmt):
    log = tmp_path / f"log-{fmt}"
    if fmt == "json":
        for rec in recs:
            results.append_record(str(log), results.json_safe(rec))   # NaN stored as "nan", as run.py does
    else:   # the reference's own lines: str(dict), nan as a bare name
        log.write_text("".join(str(rec) + "\n" for rec in recs))
    return str(log)


def _tool(capsys, log, condition, *extra):
    capsys.readouterr()
    assert gather_result.main(["--log", log, "--condition", condition, *extra]) == 0
    return capsys.readouterr().out.split("\n")[:-1]


@pytest.mark.parametrize("fmt", ["json", "reference"])
def test_report_line_for_line(tmp_path, capsys, fmt):
    recs = _log("sst-2")
    log = _write(tmp_path, recs, fmt)
    cond = {"task_name": "sst-2", "tag": ["k16-m-mezo-ft", "k16-m-ft"]}
    want = _reference_report(recs, cond, "sst-2_dev_eval_acc", "sst-2_test_eval_acc")
    got = _tool(capsys, log, str(cond))
    assert got == want
    # spot checks of the re-statement itself
    assert got[0] == "Tag: k16-m-ft, K: 16" and "Tag: k16-m-mezo-ft, K: 32" in got
    assert [line.split(":")[0] for line in got if line.startswith(("87-", "13-", "100-", "21-"))][-4:] == \
        ["87-87", "13-13", "100-100", "21-21"]               # log order, not sorted
    assert "13-13: best dev (0.95000, loss=0.0500) test (0.65000, loss=1.3500)  | total trials: 3 (ignored 1)" in got
    assert any("(#seeds 4) (#runs 8.0) (median 63.5)" in line for line in got)   # tests .71 .65 .62 .55
    assert "mean +- std: " in got                            # an empty tag x K combination


@pytest.mark.parametrize("fmt", ["json", "reference"])
def test_second_metric_and_args_to_care(tmp_path, capsys, fmt):
    recs = _log("mrpc", metrics=("f1", "acc"))
    log = _write(tmp_path, recs, fmt)
    cond = {"task_name": "mrpc/f1"}
    care = ["learning_rate", "per_device_train_batch_size"]
    want = _reference_report(recs, {"task_name": "mrpc"}, "mrpc_dev_eval_f1", "mrpc_test_eval_f1",
                             "mrpc_test_eval_acc", care)
    got = _tool(capsys, log, str(cond), "--args_to_care", str(care))
    assert got == want
    assert "\tlearning_rate: 1e-06 per_device_train_batch_size: 16 " in got
    assert any(line.startswith("learning_rates=(1e-05") for line in got)
    # plain `mrpc` (the reference stops there): selected on dev F1, the objective the runs used
    assert _tool(capsys, log, "{'task_name': 'mrpc'}", "--args_to_care", str(care)) == want
    # mrpc/acc selects on dev accuracy, F1 second
    want_acc = _reference_report(recs, {"task_name": "mrpc"}, "mrpc_dev_eval_acc", "mrpc_test_eval_acc",
                                 "mrpc_test_eval_f1")
    assert _tool(capsys, log, "{'task_name': 'mrpc/acc'}") == want_acc


def test_sts_b_and_mnli_mm_keys(tmp_path, capsys):
    assert gather_result.derive_keys({"task_name": "sts-b"}) == (
        "sts-b_dev_eval_pearson", "sts-b_test_eval_pearson", "sts-b_test_eval_spearmanr")
    assert gather_result.derive_keys({"task_name": "cola"}) == ("cola_dev_eval_mcc", "cola_test_eval_mcc", None)
    assert gather_result.derive_keys({"task_name": "mnli"})[:2] == ("mnli_dev_eval_mnli/acc", "mnli_test_eval_mnli/acc")
    recs = _log("mnli-mm", metrics=("mnli-mm/acc",))
    log = _write(tmp_path, recs, "json")
    want = _reference_report(recs, {"task_name": "mnli-mm", "tag": "k16-m-mezo-ft"}, "mnli-mm_dev_eval_mnli-mm/acc",
                             "mnli-mm_test_eval_mnli-mm/acc")
    got = _tool(capsys, log, "{'task_name': 'mnli-mm', 'tag': 'k16-m-mezo-ft'}")
    assert got == want and got[0] == "Tag: k16-m-mezo-ft, K: 16" and "(#seeds 4)" in "".join(got)
    # a log of the reference's own mnli records (mismatched test key) is read with its mapping
    old = [dict(_rec("mnli", 13, 13, 1e-5, 0.7, 0.6, metrics=("mnli/acc",)), **{
        "mnli-mm_test_eval_mnli-mm/acc": 0.65, "mnli-mm_test_eval_loss": 0.5})]
    log = _write(tmp_path, old, "reference")
    # (the reference itself then crashes looking for `mnli-mm_dev_eval_loss`; here that loss is nan)
    got = _tool(capsys, log, "{'task_name': 'mnli-mm'}")
    assert got[:2] == ["Tag: k16-m-mezo-ft, K: 16",
                       "13-13: best dev (0.70000, loss=nan) test (0.65000, loss=0.5000)  | total trials: 1 (ignored 0)"]


def test_errors(tmp_path, capsys):
    log = _write(tmp_path, _log("sst-2"), "json")
    for cond, msg in (("{'task_name': 'nope'}", "unknown task_name"), ("{'task_name': 'sst-2/f1'}", "unknown"),
                      ("{'task_name': ['sst-2', 'mr']}", "single task_name")):
        assert gather_result.main(["--log", log, "--condition", cond]) == 2
        assert msg in capsys.readouterr().err
    assert gather_result.main(["--log", log, "--condition", "{'task_name': 'sst-2'}",
                               "--args_to_care", "['nope']"]) == 2
    assert "--args_to_care: run result/" in capsys.readouterr().err
