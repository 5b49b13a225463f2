"""Mean (std) test metric over seeds, picking for each seed the best grid point on dev.

    python tools/gather_result.py --condition "{'tag': 'k16-roberta-large-mezo-ft', 'task_name': 'sst-2'}"

Runs that share a tag and K but differ in hyperparameters (and so in output_dir) form a grid;
for every data-seed/training-seed pair the run with the highest dev metric is kept (ties: the
smallest output_dir), and its test metric enters the mean. Std is the population std (ddof 0).
Reads this project's JSON records and the original code's dict-repr lines; never uses eval.
"""
import argparse
import ast
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.results import read_records  # noqa: E402

DEFAULT_ARGS = ["per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "zero_order_eps",
                "zero_order_sample", "zero_order_sample_scheduler", "scale_lr_with_samples", "lr_scheduler_type",
                "weight_decay"]
SECOND_METRIC = {"mrpc/acc": ("mrpc", "acc", "f1"), "mrpc/f1": ("mrpc", "f1", "acc"),
                 "qqp/acc": ("qqp", "acc", "f1"), "qqp/f1": ("qqp", "f1", "acc"),
                 "sts-b/pearson": ("sts-b", "pearson", "spearmanr"),
                 "sts-b/spearmanr": ("sts-b", "spearmanr", "pearson")}
KNOWN = {"sst-2", "sst-5", "mr", "cr", "mpqa", "subj", "trec", "cola", "mrpc", "qqp", "sts-b", "mnli", "mnli-mm",
         "snli", "qnli", "rte", "wnli", "uci-sentiment", "ag_news", "yahoo_answers", "yelp_review_full"}


class GatherError(ValueError):
    pass


def derive_keys(condition):
    """(dev key, test key, second test key or None) for the condition's task_name (rewritten in place)."""
    task = condition.get("task_name")
    if isinstance(task, list):
        raise GatherError("--condition: give a single task_name (or pass --key and --test_key)")
    if task is None:
        raise GatherError("--condition: needs 'task_name' (or pass --key and --test_key)")
    if task in SECOND_METRIC:
        real, m, m2 = SECOND_METRIC[task]
        condition["task_name"] = real
        return f"{real}_dev_eval_{m}", f"{real}_test_eval_{m}", f"{real}_test_eval_{m2}"
    if task not in KNOWN:
        raise GatherError(f"--condition: unknown task_name {task!r}")
    if task == "cola":
        return "cola_dev_eval_mcc", "cola_test_eval_mcc", None
    if task == "mnli":
        return "mnli_dev_eval_mnli/acc", "mnli_test_eval_mnli/acc", None
    if task == "mnli-mm":
        return "mnli_dev_eval_mnli/acc", "mnli-mm_test_eval_mnli-mm/acc", None
    return f"{task}_dev_eval_acc", f"{task}_test_eval_acc", None


def loss_key(key):
    return key[:key.index("_eval")] + "_eval_loss" if "_eval" in key else None


def matches(record, condition):
    for k, want in condition.items():
        got = record.get(k)
        if isinstance(want, list):
            if got not in want:
                return False
        elif got != want:
            return False
    return True


def seed_id(record):
    data_seed = str(record.get("data_dir", "")).rstrip("/").split("-")[-1]
    return f"{data_seed}-{record.get('seed')}"


def _fmt(x, nd):
    return "nan" if x is None else f"{x:.{nd}f}"


def gather(records, condition, key, test_key, test_key2=None, args_to_care=None, out=sys.stdout):
    """Print the report; return {(tag, k): [best record per seed]} for callers (report, tests)."""
    care = args_to_care or DEFAULT_ARGS
    kept = [r for r in records if matches(r, condition) and key in r and test_key in r]
    by_seed = {}
    for r in kept:
        by_seed.setdefault(seed_id(r), []).append(r)
    tags = sorted({(str(r.get("tag", "")), int(r.get("num_k", 0) or 0)) for r in kept})
    chosen = {}
    for tag, k in tags:
        print(f"Tag: {tag}, K: {k}", file=out)
        best_list, test2 = [], []
        for sid in sorted(by_seed):
            runs = {}
            ignored = 0
            for r in by_seed[sid]:
                if str(r.get("tag", "")) == tag and int(r.get("num_k", 0) or 0) == k:
                    if r.get("output_dir") in runs:
                        ignored += 1
                    runs[r.get("output_dir")] = r  # a later record replaces an earlier one
            if not runs:
                continue
            best = sorted(runs.values(), key=lambda r: (-float(r[key]), str(r.get("output_dir"))))[0]
            best_list.append(best)
            lk, tlk = loss_key(key), loss_key(test_key)
            line = (f"{sid}: best dev ({_fmt(best[key], 5)}, loss={_fmt(best.get(lk), 4)}) "
                    f"test ({_fmt(best[test_key], 5)}, loss={_fmt(best.get(tlk), 4)})")
            if test_key2 and test_key2 in best:
                line += f" test2 ({_fmt(best[test_key2], 5)})"
                test2.append(float(best[test_key2]))
            print(line + f" | total trials: {len(runs)} (ignored {ignored})", file=out)
            print("    " + " ".join(f"| {a}: {best.get(a)}" for a in care), file=out)
            if args_to_care:
                report_missing(list(runs.values()), args_to_care, sid, out)
        tests = np.array([float(b[test_key]) for b in best_list]) * 100
        n_runs = sum(1 for r in kept if str(r.get("tag", "")) == tag and int(r.get("num_k", 0) or 0) == k)
        line = (f"mean +- std: {tests.mean():.1f} ({tests.std():.1f}) (#seeds {len(tests)}) (#runs {n_runs}) "
                f"(median {np.median(tests):.1f})")
        if test2:
            t2 = np.array(test2) * 100
            line += f" | second metric: {t2.mean():.1f} ({t2.std():.1f})"
        losses = [float(b[loss_key(test_key)]) for b in best_list if loss_key(test_key) in b]
        if losses:
            line += f" | loss: {np.mean(losses):.4f} ({np.std(losses):.4f})"
        print(line + "\n", file=out)
        chosen[(tag, k)] = best_list
    if not tags:
        print("no matching records", file=out)
    return chosen


def report_missing(runs, args_to_care, sid, out):
    """Configurations of the observed grid (Cartesian product) that this seed has not run."""
    values = {a: sorted({repr(r.get(a)) for r in runs}) for a in args_to_care}
    done = {tuple(repr(r.get(a)) for a in args_to_care) for r in runs}
    missing = [c for c in itertools.product(*(values[a] for a in args_to_care)) if c not in done]
    for c in missing:
        print(f"    missing for seed {sid}: " + ", ".join(f"{a}={v}" for a, v in zip(args_to_care, c)), file=out)
    if missing:
        print(f"Rerun {len(missing)} configs", file=out)
        print(f"seeds=({sid.split('-')[0]})", file=out)
        for i, a in enumerate(args_to_care):
            print(f"{a}s=(" + " ".join(sorted({c[i] for c in missing})) + ")", file=out)


def literal(text, flag, kind):
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise GatherError(f"{flag}: not a Python literal: {text!r}")
    if not isinstance(value, kind):
        raise GatherError(f"{flag}: expected a {kind.__name__} literal, got {type(value).__name__}")
    return value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--condition", required=True, help="dict literal field -> value (a list means any of)")
    p.add_argument("--args_to_care", default=None, help="list literal of fields: report missing grid points")
    p.add_argument("--log", default="log")
    p.add_argument("--key", default=None, help="dev metric key, e.g. sst-2_dev_eval_acc")
    p.add_argument("--test_key", default=None)
    p.add_argument("--test_key2", default=None)
    a = p.parse_args(argv)
    try:
        condition = literal(a.condition, "--condition", dict)
        care = literal(a.args_to_care, "--args_to_care", list) if a.args_to_care else None
        if a.key and a.test_key:
            key, test_key, test_key2 = a.key, a.test_key, a.test_key2
        else:
            key, test_key, test_key2 = derive_keys(condition)
            key, test_key, test_key2 = a.key or key, a.test_key or test_key, a.test_key2 or test_key2
        if not os.path.isfile(a.log):
            raise GatherError(f"--log {a.log}: no such file")
    except GatherError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    gather(read_records(a.log), condition, key, test_key, test_key2, care)
    return 0


if __name__ == "__main__":
    sys.exit(main())
