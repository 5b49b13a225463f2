"""Draw the k-shot train/dev splits and the test split of every task (docs/behaviour.md, "k-shot splits").

    python tools/generate_k_shot_data.py --mode k-shot-1k-test --k 16
    python tools/generate_k_shot_data.py --mode k-shot-1k-test --k 16 --task uci-sentiment

Reads `<data_dir>/<TASK>/` (the LM-BFF "original" folders) and writes
`<output_dir>/<mode>/<TASK>/<k>-<seed>/`. For the same inputs the files are byte-identical to
those of the LM-BFF/MeZO generator, quirks included:

- GLUE-style tasks (GLUE_TASKS) are handled as raw text lines (newline kept); the first line
  is a header, except for CoLA. Other tasks are headerless `label,text` CSV files read with
  pandas, and written back with pandas (no header, no index).
- Seeds are the outer loop, tasks the inner one. For each (seed, task) the NumPy legacy global
  RNG is seeded with the seed and the training rows are shuffled with `np.random.shuffle`.
  For CoLA (no header) the shuffle acts on the loaded list itself, so CoLA's shuffles
  accumulate across seeds in the order of --seed (kept: it changes the splits); the other tasks
  shuffle a fresh copy each time.
- Test split: GLUE-style tasks write every non-train file of the original with `dev` renamed
  to `test` (MNLI: test_matched.tsv, test_mismatched.tsv), header first; the other tasks write
  the original test.csv. In k-shot-1k-test mode a GLUE-style split with more than 1000 data
  lines (header not counted) is shuffled after `np.random.seed(42)` and cut to its first 1000
  data lines (CoLA: again in place on the loaded list, so CoLA's 1k test set differs per seed);
  a CSV test set with more than 1000 rows becomes `DataFrame.sample(n=1000, random_state=42)`.
- Train rows are grouped by label in order of first appearance (label = the label column of the
  line with surrounding whitespace stripped; STS-B: score < 2.5 → 0 else 1; CSV: column 0).
  train = header + the first k rows of each label; dev (`dev.tsv`, MNLI `dev_matched.tsv`,
  `dev.csv`) = header + rows k .. 2k-1 of each label (k-shot-10x: k .. 11k-1).
  No dev_mismatched.tsv is written (the `mnli-mm` task selects models on dev_matched.tsv).

Differences from the original, none of which changes a byte of the output: tasks whose folder
is missing are skipped with one line instead of crashing; unreadable input raises a one-line
error (exit code 2); every file is written to a temporary name and then renamed, so a crash
never leaves a half-written split; lines end with "\\n" on every platform (the original wrote
os.linesep, which is "\\n" on Linux).
"""
import argparse
import os
import sys
from typing import Callable, Dict, List, Optional

import numpy as np
import pandas as pd


from mezo.errors import UsageError
from mezo.data.tasks import TASKS

GLUE_TASKS = ["MNLI", "MRPC", "QNLI", "QQP", "RTE", "SNLI", "SST-2", "STS-B", "WNLI", "CoLA"]
CSV_TASKS = ["sst-5", "mr", "cr", "mpqa", "subj", "trec", "uci-sentiment"]
DEFAULT_TASKS = ["SST-2", "sst-5", "mr", "cr", "mpqa", "subj", "trec", "CoLA", "MRPC", "QQP",
                 "STS-B", "MNLI", "SNLI", "QNLI", "RTE", "uci-sentiment"]
DEFAULT_SEEDS = [100, 13, 21, 42, 87]
MODES = ["k-shot", "k-shot-10x", "k-shot-1k-test"]
TEST_CAP = 1000
TEST_SEED = 42

_CANONICAL = {t.lower(): t for t in GLUE_TASKS + CSV_TASKS}


def canonical_task(name: str) -> str:
    """The folder name of a known task, matched case-insensitively (sst-2 → SST-2); other
    names are kept as given (and handled as CSV tasks, like the original does)."""
    return _CANONICAL.get(name.lower(), name)


def is_glue(task: str) -> bool:
    return task in GLUE_TASKS


def glue_splits(task: str) -> List[str]:
    return ["train", "dev_matched", "dev_mismatched"] if task == "MNLI" else ["train", "dev"]


# --------------------------------------------------------------------------------------------
# loading


def _read_lines(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise UsageError(f"{path}: file not found")
    try:
        with open(path, "r", encoding="utf-8") as f:  # universal newlines, like the original
            return f.readlines()
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _read_csv(path: str) -> pd.DataFrame:
    if not os.path.isfile(path):
        raise UsageError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, header=None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        msg = " ".join(str(e).split())
        raise UsageError(f"{path}: cannot read as CSV ({msg})") from None
    if df.shape[1] < 2:
        raise UsageError(f"{path}: expected 2 columns (label,text), got {df.shape[1]}")
    return df


def _check_glue_train(task: str, path: str, lines: List[str]) -> None:
    """Fail early (with file:line) where the original would crash while grouping labels."""
    header, _ = split_header(task, lines)
    for i, line in enumerate(lines[len(header):], start=len(header) + 1):
        if task == "STS-B":
            raw = line.strip().split("\t")[-1]
            try:
                float(raw)
            except ValueError:
                raise UsageError(f"{path}:{i}: STS-B score {raw!r} is not a number") from None
        elif task == "CoLA" and len(line.strip().split("\t")) < 2:
            raise UsageError(f"{path}:{i}: expected at least 2 tab-separated columns")


def load_task(data_dir: str, task: str, log: Callable[[str], None] = print) -> Optional[dict]:
    """The original splits of one task, or None when its folder is missing.

    GLUE-style: {split: [raw lines]}; others: {"train": DataFrame, "test": DataFrame}."""
    task_dir = os.path.join(data_dir, task)
    if not os.path.isdir(task_dir):
        return None
    dataset = {}
    if is_glue(task):
        for split in glue_splits(task):
            path = os.path.join(task_dir, f"{split}.tsv")
            dataset[split] = lines = _read_lines(path)
            if lines and not lines[-1].endswith("\n"):
                log(f"warning: {path}: the last line has no newline; like the original, it is "
                    f"written as is and glues onto the next line if shuffled into the middle")
            blank = sum(1 for line in lines if line.strip() == "")
            if blank:
                log(f"warning: {path}: {blank} blank lines (kept, like the original)")
        _check_glue_train(task, os.path.join(task_dir, "train.tsv"), dataset["train"])
    else:
        for split in ["train", "test"]:
            dataset[split] = _read_csv(os.path.join(task_dir, f"{split}.csv"))
    _warn_unknown_labels(task, dataset, log)
    return dataset


def _warn_unknown_labels(task: str, dataset: dict, log: Callable[[str], None]) -> None:
    """Rows whose label the task does not know still form label groups, as in the original
    (so the output stays byte-identical), but the split files will not load: say so."""
    spec = TASKS.get(task.lower())
    if spec is None or spec.output_mode != "classification":
        return
    if is_glue(task):
        _, rows = split_header(task, dataset["train"])
    else:
        rows = dataset["train"].values.tolist()
    seen = dict.fromkeys(get_label(task, r) for r in rows)
    unknown = [lab for lab in seen if lab not in spec.label_list or isinstance(lab, (bool, float))]
    if unknown:
        shown = ", ".join(repr(x) for x in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        log(f"warning: {task}: train labels not in the task's label list "
            f"{spec.label_list}: {shown} (they form their own groups, as in the original)")


def load_datasets(data_dir: str, tasks: List[str], log: Callable[[str], None] = print) -> Dict[str, dict]:
    datasets = {}
    for task in tasks:
        task = canonical_task(task)
        if task in datasets:
            continue
        data = load_task(data_dir, task, log)
        if data is None:
            log(f"skip {task}: no folder {os.path.join(data_dir, task)}")
            continue
        datasets[task] = data
    return datasets


# --------------------------------------------------------------------------------------------
# the original's helpers


def split_header(task: str, lines: list):
    """(header, rest). For CoLA the rest is the list itself (no copy) — the source of the
    cumulative-shuffle quirk."""
    if task == "CoLA":
        return [], lines
    if is_glue(task):
        return lines[0:1], lines[1:]
    raise ValueError(f"{task}: not a GLUE-style task")


def get_label(task: str, line):
    """The grouping label of a train row: a raw TSV line for GLUE-style tasks, a [label, text]
    row for the others."""
    if is_glue(task):
        cols = line.strip().split("\t")
        if task == "CoLA":
            return cols[1]
        if task == "MRPC":
            return cols[0]
        if task == "STS-B":
            return 0 if float(cols[-1]) < 2.5 else 1
        return cols[-1]
    return line[0]


# --------------------------------------------------------------------------------------------
# writing


def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_lines(path: str, lines: List[str]) -> None:
    def w(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line)
    _atomic_write(path, w)


def write_csv(path: str, rows) -> None:
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    _atomic_write(path, lambda tmp: df.to_csv(tmp, header=False, index=False, lineterminator="\n"))


def generate(datasets: Dict[str, dict], k: int, seeds: List[int], output_dir: str, mode: str,
             log: Callable[[str], None] = print) -> List[str]:
    """Write every (seed, task) folder; returns their paths. `datasets` as from
    load_datasets (note: CoLA's lists are shuffled in place, as in the original)."""
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: unknown mode; known: {', '.join(MODES)}")
    if k < 1:
        raise UsageError(f"--k {k}: must be a positive integer")
    dev_rate = 11 if "10x" in mode else 2
    written = []
    for seed in seeds:
        log(f"Seed = {seed}")
        for task, dataset in datasets.items():
            np.random.seed(seed)
            if is_glue(task):
                header, train_lines = split_header(task, dataset["train"])
                np.random.shuffle(train_lines)
            else:
                header = []
                train_lines = dataset["train"].values.tolist()
                np.random.shuffle(train_lines)

            setting_dir = os.path.join(output_dir, mode, task, f"{k}-{seed}")
            os.makedirs(setting_dir, exist_ok=True)

            # test split(s)
            if is_glue(task):
                for split, lines in dataset.items():
                    if split.startswith("train"):
                        continue
                    name = split.replace("dev", "test")
                    if mode == "k-shot-1k-test":
                        test_header, test_lines = split_header(task, lines)
                        if len(test_lines) > TEST_CAP:
                            np.random.seed(TEST_SEED)
                            np.random.shuffle(test_lines)
                            test_lines = test_lines[:TEST_CAP]
                        lines = test_header + test_lines
                    write_lines(os.path.join(setting_dir, f"{name}.tsv"), lines)
            else:
                test = dataset["test"]
                if mode == "k-shot-1k-test" and len(test) > TEST_CAP:
                    test = test.sample(n=TEST_CAP, random_state=TEST_SEED)
                write_csv(os.path.join(setting_dir, "test.csv"), test)

            # group by label, in order of first appearance
            groups: Dict[object, list] = {}
            for line in train_lines:
                groups.setdefault(get_label(task, line), []).append(line)

            train_rows = [r for rows in groups.values() for r in rows[:k]]
            dev_rows = [r for rows in groups.values() for r in rows[k:dev_rate * k]]
            if is_glue(task):
                write_lines(os.path.join(setting_dir, "train.tsv"), header + train_rows)
                dev_name = "dev_matched.tsv" if task == "MNLI" else "dev.tsv"
                write_lines(os.path.join(setting_dir, dev_name), header + dev_rows)
            else:
                write_csv(os.path.join(setting_dir, "train.csv"), train_rows)
                write_csv(os.path.join(setting_dir, "dev.csv"), dev_rows)

            short = [str(lab) for lab, rows in groups.items() if len(rows) < dev_rate * k]
            log(f"| Task = {task}: {len(groups)} labels, train {len(train_rows)}, dev {len(dev_rows)}"
                + (f" (labels with fewer than {dev_rate * k} rows: {', '.join(short)})" if short else ""))
            written.append(setting_dir)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=16, help="training examples per label")
    p.add_argument("--task", type=str, nargs="+", default=DEFAULT_TASKS,
                   help="task folder names (default: the paper's 15 tasks and uci-sentiment)")
    p.add_argument("--seed", type=int, nargs="+", default=DEFAULT_SEEDS,
                   help="data seeds, in this order (it matters for CoLA)")
    p.add_argument("--data_dir", type=str, default="data/original", help="the original data")
    p.add_argument("--output_dir", type=str, default="data", help="output root")
    p.add_argument("--mode", type=str, default="k-shot", choices=MODES,
                   help="k-shot: dev = k per label; k-shot-10x: dev = 10k per label; "
                        "k-shot-1k-test: k-shot with test sets capped at 1000")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.k < 1:
            raise UsageError(f"--k {args.k}: must be a positive integer")
        datasets = load_datasets(args.data_dir, args.task)
        if not datasets:
            raise UsageError(f"--data_dir {args.data_dir}: none of the tasks has a folder there")
        generate(datasets, args.k, args.seed, args.output_dir, args.mode)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
