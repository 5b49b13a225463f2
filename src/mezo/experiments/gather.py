"""Mean (std) test metric over seeds, picking for each seed the best grid point on dev.

    python tools/gather_result.py --condition "{'tag': 'k16-roberta-large-mezo-ft', 'task_name': 'sst-2'}"

Prints what the reference's `tools/gather_result.py` prints, line for line, on the same log
(docs/behaviour.md, "Gathering results"): records matching every condition and holding both
metric keys are grouped by "<data seed>-<seed>" (in the order the seeds first appear in the log);
for every tag x K (each sorted) a seed's runs are de-duplicated by output_dir (a later record replaces an earlier one),
the run with the highest dev metric is kept (ties: the smallest output_dir; a NaN compares as
Python's max does), and `mean +- std` (population std) of its test metric is printed, with the
median, `#runs` = the de-duplicated runs of the seeds shown (printed as a float, as the reference
does), the second metric and the test loss. With `--args_to_care`, the configurations of the
observed grid a seed has not run come first.

Keys come from `mezo.data.tasks`: `<task>_dev_eval_<m>` / `<task>_test_eval_<m>` with m the metric the
run selected on (`dev_objective`: f1 for MRPC/QQP, pearson for STS-B, mcc for CoLA, ...), the other
metric of MRPC/QQP/STS-B as the second one; `mrpc/acc`, `qqp/f1`, `sts-b/spearmanr`, ... pick the
metric explicitly, as in the reference. `mnli-mm` finds this project's mnli-mm runs (keys
`mnli-mm_dev_eval_mnli-mm/acc`, `mnli-mm_test_eval_mnli-mm/acc`); on a log without any, the
reference's mapping (task mnli, dev `mnli_dev_eval_mnli/acc`, test
`mnli-mm_test_eval_mnli-mm/acc`) is tried. Reads JSON records and the reference's dict-repr
lines; never uses eval. Where the reference crashes on a record without a loss, `nan` is printed.
"""
import argparse
import ast
import itertools
import math
import os
import sys

import numpy as np

from mezo.errors import UsageError
from mezo.experiments.results import read_records
from mezo.data.tasks import DEV_OBJECTIVE_KEYS, TASKS

DEFAULT_ARGS = ["per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "zero_order_eps",
                "zero_order_sample", "zero_order_sample_scheduler", "scale_lr_with_samples", "lr_scheduler_type",
                "weight_decay"]
# Tasks the reference's gather knows that this project does not run (for reading its logs): accuracy.
ORIGINAL_ONLY_TASKS = ("ag_news", "yahoo_answers", "yelp_review_full")




def metric_names(task_name):
    """The metric names a task reports (without `eval_`)."""
    return list(TASKS[task_name].metric_names)


def selection_metric(names):
    """The metric the runs selected on: the first of tasks.DEV_OBJECTIVE_KEYS the task reports."""
    for key in DEV_OBJECTIVE_KEYS:
        if key[len("eval_"):] in names:
            return key[len("eval_"):]
    raise UsageError(f"no dev objective among {names}")


def _pair(names):
    """MRPC/QQP: (acc, f1); STS-B: (pearson, spearmanr); None for a task with one metric."""
    for pair in (("acc", "f1"), ("pearson", "spearmanr")):
        if all(m in names for m in pair):
            return pair
    return None


def derive_keys(condition):
    """(dev key, test key, second test key or None) for the condition's task_name (rewritten in place)."""
    task = condition.get("task_name")
    if isinstance(task, list):
        raise UsageError("--condition: give a single task_name (or pass --key and --test_key)")
    if task is None:
        raise UsageError("--condition: needs 'task_name' (or pass --key and --test_key)")
    real, _, wanted = str(task).partition("/")
    if real in ORIGINAL_ONLY_TASKS and not wanted:
        return f"{real}_dev_eval_acc", f"{real}_test_eval_acc", None
    if real not in TASKS:
        raise UsageError(f"--condition: unknown task_name {task!r}; known: "
                          f"{', '.join(list(TASKS) + list(ORIGINAL_ONLY_TASKS))}")
    names = metric_names(real)
    pair = _pair(names)
    if wanted:
        if pair is None or wanted not in pair:
            raise UsageError(f"--condition: unknown task_name {task!r}"
                              + (f"; {real} reports {'/'.join(pair)}" if pair else ""))
        m = wanted
        condition["task_name"] = real
    else:
        m = selection_metric(names)
    second = None
    if pair is not None and m in pair:
        other = pair[1 - pair.index(m)]
        second = f"{real}_test_eval_{other}"
    return f"{real}_dev_eval_{m}", f"{real}_test_eval_{m}", second


# The reference's own mnli-mm mapping (README, Differences from the original code): task mnli, mismatched test key.
ORIGINAL_MNLI_MM = ("mnli", "mnli_dev_eval_mnli/acc", "mnli-mm_test_eval_mnli-mm/acc")


def matches(record, condition):
    """Every condition holds: the field is present and equal (a list: one of)."""
    for k, want in condition.items():
        if k not in record:
            return False
        if isinstance(want, list):
            if record[k] not in want:
                return False
        elif record[k] != want:
            return False
    return True


def seed_id(record):
    """`<data seed>-<seed>`: the last `-` piece of data_dir, then the training seed."""
    return str(record.get("data_dir", "")).split("-")[-1] + "-" + str(record.get("seed"))


def _num(value):
    """A metric as float: NaN for None (the reader's `nan`) and for the strings JSON stores."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def loss_keys(test_key):
    """(dev loss key, test loss key) as the reference derives them from the test key."""
    test_loss = test_key.split("_eval")[0] + "_eval_loss"
    return test_loss.replace("test", "dev"), test_loss


def gather(records, condition, key, test_key, test_key2=None, args_to_care=None, out=None):
    """Print the report (to ``out``, default stdout); return {(tag, k): [best record per seed]}."""
    out = sys.stdout if out is None else out
    seeds = {}
    for r in records:
        if matches(r, condition) and test_key in r and key in r:
            seeds.setdefault(seed_id(r), []).append(r)
    kept = [r for runs in seeds.values() for r in runs]
    if args_to_care:
        for r in kept:
            missing = [a for a in args_to_care if a not in r]
            if missing:
                raise UsageError(f"--args_to_care: run {r.get('output_dir')} has no field {missing[0]!r}")
    tags = sorted({r.get("tag", "") for r in kept})
    ks = sorted({r.get("num_k", 0) for r in kept})
    chosen = {}
    for tag, k in itertools.product(tags, ks):
        print(f"Tag: {tag}, K: {k}", file=out)
        with_dups = {s: [r for r in runs if r.get("tag", "") == tag and r.get("num_k", 0) == k]
                     for s, runs in seeds.items()}
        deduped = {s: list({r.get("output_dir"): r for r in runs}.values()) for s, runs in with_dups.items()}
        best = {s: max(sorted(runs, key=lambda r: str(r.get("output_dir"))), key=lambda r: _num(r[key]))
                for s, runs in deduped.items() if runs}
        if args_to_care:
            report_missing(deduped, args_to_care, out)
        print_seeds(best, deduped, with_dups, key, test_key, test_key2, args_to_care or DEFAULT_ARGS, out)
        print_summary(best, deduped, test_key, test_key2, out)
        chosen[(tag, k)] = list(best.values())
    if not kept:
        print("no matching records", file=sys.stderr)
    return chosen


def print_seeds(best, deduped, with_dups, key, test_key, test_key2, fields, out):
    dev_loss, test_loss = loss_keys(test_key)
    for s, r in best.items():
        second = f"test2 ({_num(r.get(test_key2)):.5f})" if test_key2 else ""
        print(f"{s}: best dev ({_num(r[key]):.5f}, loss={_num(r.get(dev_loss)):.4f}) "
              f"test ({_num(r[test_key]):.5f}, loss={_num(r.get(test_loss)):.4f}) {second} | "
              f"total trials: {len(deduped[s])} (ignored {len(with_dups[s]) - len(deduped[s])})", file=out)
        print("    " + "".join(f"| {a}: {r.get(a, '')} " for a in fields), file=out)


def print_summary(best, deduped, test_key, test_key2, out):
    line = "mean +- std: "
    if best:
        tests = np.array([_num(r[test_key]) for r in best.values()])
        runs = np.array([len(deduped[s]) for s in best], dtype=np.float64).sum()
        line += (f"{tests.mean() * 100:.1f} ({tests.std() * 100:.1f}) (#seeds {len(tests)}) (#runs {runs}) "
                 f"(median {np.median(tests) * 100:.1f})")
        if test_key2:
            t2 = np.array([_num(r.get(test_key2)) for r in best.values()])
            line += f" | second metric: {t2.mean() * 100:.1f} ({t2.std() * 100:.1f}) (median {np.median(t2) * 100:.1f})"
        losses = np.array([_num(r.get(loss_keys(test_key)[1])) for r in best.values()])
        line += f" | loss: {losses.mean():.4f} ({losses.std():.4f})"
    print(line, file=out)
    print("", file=out)


def report_missing(deduped, args_to_care, out):
    """Configurations of the observed grid (values in order of appearance) each seed has not run."""
    values = {a: [] for a in args_to_care}
    done = {}
    for s, runs in deduped.items():
        done[s] = []
        for r in runs:
            for a in args_to_care:
                if r[a] not in values[a]:
                    values[a].append(r[a])
            done[s].append(tuple(r[a] for a in args_to_care))
    rerun = {"seeds": [], **{f"{a}s": [] for a in args_to_care}}
    count = 0
    for s in deduped:
        print(f"Missing configs for seed {s}", file=out)
        for config in itertools.product(*values.values()):
            if config in done[s]:
                continue
            rerun["seeds"].append(s.split("-")[-1])
            print("\t" + "".join(f"{a}: {v} " for a, v in zip(args_to_care, config)), file=out)
            for a, v in zip(args_to_care, config):
                rerun[f"{a}s"].append(str(v))
            count += 1
    print(f"Rerun {count} configs", file=out)
    for name, vals in rerun.items():
        print(f"{name}=({' '.join(vals)})", file=out)


def literal(text, flag, kind):
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise UsageError(f"{flag}: not a Python literal: {text!r}")
    if not isinstance(value, kind):
        raise UsageError(f"{flag}: expected a {kind.__name__} literal, got {type(value).__name__}")
    return value


def resolve(records, condition, key, test_key):
    """mnli-mm on a log with only the reference's records: its own mapping (task mnli)."""
    if condition.get("task_name") != "mnli-mm" or any(
            matches(r, condition) and key in r and test_key in r for r in records):
        return condition, key, test_key
    original = dict(condition, task_name=ORIGINAL_MNLI_MM[0])
    if any(matches(r, original) and ORIGINAL_MNLI_MM[1] in r and ORIGINAL_MNLI_MM[2] in r for r in records):
        return original, ORIGINAL_MNLI_MM[1], ORIGINAL_MNLI_MM[2]
    return condition, key, test_key


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--condition", required=True, help="dict literal field -> value (a list means any of)")
    p.add_argument("--args_to_care", default=None, help="list literal of fields: report missing grid points")
    p.add_argument("--log", default="log")
    p.add_argument("--key", default=None, help="dev metric key, e.g. sst-2_dev_eval_acc (with --test_key)")
    p.add_argument("--test_key", default=None)
    p.add_argument("--test_key2", default=None)
    a = p.parse_args(argv)
    try:
        condition = literal(a.condition, "--condition", dict)
        care = literal(a.args_to_care, "--args_to_care", list) if a.args_to_care else None
        if a.key or a.test_key:
            if not (a.key and a.test_key):
                raise UsageError("--key and --test_key go together")
            key, test_key, test_key2 = a.key, a.test_key, a.test_key2
        else:
            key, test_key, test_key2 = derive_keys(condition)
            test_key2 = a.test_key2 or test_key2
        if not os.path.isfile(a.log):
            raise UsageError(f"--log {a.log}: no such file")
        records = read_records(a.log)
        if not (a.key or a.test_key):
            condition, key, test_key = resolve(records, condition, key, test_key)
        gather(records, condition, key, test_key, test_key2, care)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # python -m mezo.experiments.gather
    sys.exit(main())
