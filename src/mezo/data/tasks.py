"""Task processors: how each task's split files are read, its labels, and its metrics.

One `Task` per task key of the reference (docs/behaviour.md, "Tasks and data files"): the
GLUE-style tasks read tab-separated files (`train.tsv`, `dev.tsv`, `test.tsv`), the LM-BFF
sentence tasks and the project's demo task `uci-sentiment` read headerless `label,text` CSV
files (`train.csv`, `dev.csv`, `test.csv`). The k-shot folders that
`tools/generate_k_shot_data.py` writes have exactly these names (MNLI: `dev_matched.tsv`,
`test_matched.tsv`, `test_mismatched.tsv`).

Reading rules, kept from the reference:
- TSV: each line split on tabs, no quote handling; the first line is a header and is skipped,
  except for CoLA, which has none. Guids are `<split>-<i>`, i = 0-based line index (so the
  first example after a header is `train-1`).
- CSV: read with the `csv` module (standard quoting, strict: a stray quote or an unterminated
  quoted field is an error rather than silently merged text), no header, column 0 = integer
  label, column 1 = text. Guids are `<split>-<i>`, i = 0-based record index.
- CSV texts that pandas reads as missing (the reference uses `pd.read_csv(path, header=None)`)
  become "", as in the reference: an empty field or one equal to a string of pandas' default
  NA set (`NA`, `N/A`, `null`, `nan`, `None`, ...; `PANDAS_NA`, imported from pandas), quoted
  or not. One warning per file counts empty texts, whichever way they arose.
- QQP rows with too few columns are skipped, like the reference does; one warning per file
  gives the count.

Bad input is reported instead of crashing later: a row with too few columns, a label outside
the task's label list, a CSV label that is not an integer, malformed CSV quoting, an STS-B score
that is not a number in [0, 5], a file that is not UTF-8 or contains a NUL byte, a split without
a single example, and a missing split file each raise `UsageError` with a one-line message
naming `file:line` (or the path). Blank lines are skipped (one warning). Every split read logs
its example count; `check_k_shot` warns when a k-shot train split lacks K examples per label.

Label types follow the reference: str for the GLUE-style tasks ("0"/"1", "entailment", ...),
int for the CSV tasks, float for STS-B (regression). The order of `label_list` defines the
label ids.

`mnli-mm` (which cannot run at all in the reference; README, Differences from the original code)
works here: it reads the MNLI folder, evaluates on `test_mismatched.tsv`, and selects models on
`dev_mismatched.tsv` when the folder has one (an original GLUE MNLI folder does) and otherwise
on `dev_matched.tsv`. The generator writes only `dev_matched.tsv`: in a k-shot folder the dev
split is K examples per label drawn from the MNLI *training* set, so there is no mismatched dev
to be had and `dev_matched.tsv` is the right file for model selection.
"""
import csv
import io
import logging
import os
import re
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from pandas._libs.parsers import STR_NA_VALUES
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from mezo.errors import UsageError

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")

# Texts that `pd.read_csv` (default na_values, as the reference calls it) reads as missing.
PANDAS_NA = frozenset(STR_NA_VALUES)


@dataclass
class InputExample:
    guid: str
    text_a: str
    text_b: Optional[str] = None
    label: Union[str, int, float, None] = None


# --------------------------------------------------------------------------------------------
# metrics: the reference's (transformers' glue_compute_metrics) from scikit-learn and scipy

# metric kind -> the keys compute_metrics returns, in order (without the `eval_` prefix)
METRIC_KEYS = {"acc": ("acc",), "mnli": ("mnli/acc",), "mnli-mm": ("mnli-mm/acc",), "mcc": ("mcc",),
               "acc_and_f1": ("acc", "f1", "acc_and_f1"), "pearson_and_spearman": ("pearson", "spearmanr", "corr")}


def _accuracy(preds, labels) -> float:
    return float(np.mean(preds == labels)) if len(labels) else float("nan")


def _correlations(preds, labels):
    """(Pearson, Spearman); NaN when undefined (fewer than two points, a constant input)."""
    if len(labels) < 2 or np.all(preds == preds[0]) or np.all(labels == labels[0]):
        return float("nan"), float("nan")
    return float(pearsonr(preds, labels)[0]), float(spearmanr(preds, labels)[0])


# --------------------------------------------------------------------------------------------
# file reading helpers


def _read_text(path: str) -> str:
    if not os.path.isfile(path):
        raise UsageError(f"{path}: split file not found")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    nul = data.find(b"\0")
    if nul >= 0:  # a binary file, or one zero-filled by a crash
        line = data[:nul].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: NUL byte (a damaged or binary file)")
    return text


_NEWLINE = re.compile(r"\r\n|\r|\n")  # what Python's universal-newline mode splits on


def _split_lines(text: str) -> List[str]:
    lines = _NEWLINE.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # the terminator of the last line
    return lines


def _warn_counts(path: str, empty: int, blank: int, skipped: int = 0, skip_why: str = "") -> None:
    if skipped:
        logger.warning("%s: skipped %d rows %s", path, skipped, skip_why)
    if blank:
        logger.warning("%s: skipped %d blank lines", path, blank)
    if empty:
        logger.warning("%s: %d empty texts (kept as \"\"; in CSV files also pandas' NA strings such as NA, "
                       "null, nan)", path, empty)


def _finish(path: str, examples: list) -> list:
    """Refuse a split without examples; log how many there are."""
    if not examples:
        raise UsageError(f"{path}: no examples (an empty split)")
    logger.info("%s: %d examples", path, len(examples))
    return examples


def check_k_shot(task, examples, num_k: int, path: str = "train") -> bool:
    """Warn when a classification train split does not have --num_k examples of every label."""
    if task.output_mode != "classification":
        return True
    counts = {lab: 0 for lab in task.label_list}
    for e in examples:
        counts[e.label] = counts.get(e.label, 0) + 1
    if all(n == num_k for n in counts.values()):
        return True
    logger.warning("%s: not %d examples per label (--num_k %d): %s", path, num_k, num_k,
                   ", ".join(f"{lab!r}: {n}" for lab, n in counts.items()))
    return False


def _fmt_labels(labels: Sequence) -> str:
    return ", ".join(repr(x) for x in labels)


# --------------------------------------------------------------------------------------------
# tasks


class Task:
    """One task: where its files are, how to read them, its labels and metrics."""

    name: str
    dir_name: str
    label_list: list
    output_mode: str = "classification"
    metric: str = "acc"  # acc | mcc | acc_and_f1 | mnli | mnli-mm | pearson_and_spearman
    regression_bounds = None
    median = None
    file_names: Dict[str, str] = {"train": "train", "dev": "dev", "test": "test"}
    extension = ""

    def __init__(self, name: str, dir_name: str, label_list: list, metric: str = "acc",
                 file_names: Optional[Dict[str, str]] = None):
        self.name = name
        self.dir_name = dir_name
        self.label_list = list(label_list)
        self.metric = metric
        if file_names is not None:
            self.file_names = dict(file_names)
        self._label_index = {lab: i for i, lab in enumerate(self.label_list)}

    def __repr__(self):
        return f"<Task {self.name} ({self.dir_name}, {self.num_labels} labels)>"

    @property
    def num_labels(self) -> int:
        return len(self.label_list)

    # -- files --------------------------------------------------------------------------
    def split_path(self, data_dir: str, split: str) -> str:
        if split not in SPLITS:
            raise UsageError(f"split {split!r}: unknown split; known: {', '.join(SPLITS)}")
        return os.path.join(data_dir, self.file_names[split] + self.extension)

    def read_examples(self, data_dir: str, split: str) -> List[InputExample]:
        raise NotImplementedError

    # -- labels -------------------------------------------------------------------------
    def _label_error(self, label) -> str:
        return (f"unknown label {label!r} for task {self.name}; "
                f"expected one of {_fmt_labels(self.label_list)}")

    def label_id(self, label) -> int:
        """Index of `label` in `label_list`. The type must match the task's raw label type
        (str for GLUE-style tasks, int for the CSV tasks), as in the reference."""
        # bool is an int subclass and 1.0 == 1 hashes like 1: refuse those look-alikes
        try:
            ok = not isinstance(label, (bool, float)) and label is not None and label in self._label_index
        except TypeError:  # unhashable
            ok = False
        if not ok:
            raise UsageError(self._label_error(label))
        return self._label_index[label]

    # -- metrics ------------------------------------------------------------------------
    @property
    def metric_names(self) -> tuple:
        """The keys compute_metrics returns (without `eval_`)."""
        return METRIC_KEYS[self.metric]

    def compute_metrics(self, preds: np.ndarray, labels: np.ndarray) -> dict:
        """Metrics with the reference's keys (without the `eval_` prefix).

        preds: predicted label ids (classification) or scores (regression); labels: gold ids
        or scores, same length."""
        preds = np.asarray(preds)
        labels = np.asarray(labels)
        if preds.shape != labels.shape:
            raise ValueError(f"compute_metrics: preds shape {preds.shape} != labels shape {labels.shape}")
        with warnings.catch_warnings():   # degenerate inputs (one class, constant scores) are fine here
            warnings.simplefilter("ignore")
            return self._metrics(preds, labels)

    def _metrics(self, preds, labels) -> dict:
        m = self.metric
        if m in ("acc", "mnli", "mnli-mm"):
            return {METRIC_KEYS[m][0]: _accuracy(preds, labels)}
        if m == "mcc":
            return {"mcc": float(matthews_corrcoef(labels, preds))}
        if m == "acc_and_f1":
            acc = _accuracy(preds, labels)
            f1 = float(f1_score(labels, preds, zero_division=0.0))
            return {"acc": acc, "f1": f1, "acc_and_f1": (acc + f1) / 2}
        if m == "pearson_and_spearman":
            p, sp = _correlations(preds.astype(np.float64), labels.astype(np.float64))
            return {"pearson": p, "spearmanr": sp, "corr": (p + sp) / 2}
        raise ValueError(f"unknown metric {m!r}")


class TsvTask(Task):
    """GLUE-style task: tab-separated lines, no quote handling."""

    extension = ".tsv"

    def __init__(self, name, dir_name, label_list, text_a: int, text_b: Optional[int], label: int,
                 header: bool = True, skip_short_rows: bool = False, **kw):
        super().__init__(name, dir_name, label_list, **kw)
        self.text_a_col = text_a
        self.text_b_col = text_b
        self.label_col = label  # -1 = last column
        self.header = header
        self.skip_short_rows = skip_short_rows
        cols = [text_a] + ([text_b] if text_b is not None else [])
        if label >= 0:
            self.min_columns = max(cols + [label]) + 1
        else:
            # the last column is the label, and must come after the text columns
            self.min_columns = max(cols) + 2

    def _parse_label(self, raw: str, where: str):
        if raw not in self._label_index:
            raise UsageError(f"{where}: {self._label_error(raw)}")
        return raw

    def read_examples(self, data_dir: str, split: str) -> List[InputExample]:
        path = self.split_path(data_dir, split)
        lines = _split_lines(_read_text(path))
        examples = []
        empty = blank = skipped = 0
        for i, line in enumerate(lines):
            if i == 0 and self.header:
                continue
            if line == "":
                blank += 1
                continue
            row = line.split("\t")
            where = f"{path}:{i + 1}"
            if len(row) < self.min_columns:
                if self.skip_short_rows:
                    skipped += 1
                    continue
                raise UsageError(f"{where}: expected at least {self.min_columns} tab-separated "
                                 f"columns, got {len(row)}")
            label = self._parse_label(row[self.label_col], where)
            text_a = row[self.text_a_col]
            text_b = row[self.text_b_col] if self.text_b_col is not None else None
            empty += (text_a == "") + (text_b == "")
            examples.append(InputExample(guid=f"{split}-{i}", text_a=text_a, text_b=text_b, label=label))
        _warn_counts(path, empty, blank, skipped, f"with fewer than {self.min_columns} columns")
        return _finish(path, examples)


class RegressionTsvTask(TsvTask):
    """STS-B: the label is a float similarity score in [0, 5]."""

    output_mode = "regression"
    regression_bounds = (0.0, 5.0)
    median = 2.5

    def _score(self, label):
        if isinstance(label, bool):
            return None
        try:
            v = float(label)
        except (TypeError, ValueError):
            return None
        lo, hi = self.regression_bounds
        if not (lo <= v <= hi):  # also rejects nan
            return None
        return v

    def _parse_label(self, raw: str, where: str):
        v = self._score(raw)
        if v is None:
            raise UsageError(f"{where}: label {raw!r} is not a number in "
                             f"[{self.regression_bounds[0]}, {self.regression_bounds[1]}]")
        return v

    def label_id(self, label) -> int:
        """Regression has one placeholder label: every valid score maps to 0."""
        if self._score(label) is None:
            raise UsageError(f"label {label!r} for task {self.name}: not a number in "
                             f"[{self.regression_bounds[0]}, {self.regression_bounds[1]}]")
        return 0


class MnliMismatchedTask(TsvTask):
    """mnli-mm: test on test_mismatched.tsv; dev = dev_mismatched.tsv when present, else
    dev_matched.tsv (the only dev split a generated k-shot folder has; see module doc)."""

    def split_path(self, data_dir: str, split: str) -> str:
        if split == "dev":
            mm = os.path.join(data_dir, "dev_mismatched.tsv")
            if os.path.isfile(mm):
                return mm
        return super().split_path(data_dir, split)


_INT = re.compile(r"[+-]?[0-9]+")


class CsvTask(Task):
    """LM-BFF sentence task: headerless CSV rows `label,text` with an integer label."""

    extension = ".csv"

    def read_examples(self, data_dir: str, split: str) -> List[InputExample]:
        path = self.split_path(data_dir, split)
        text = _read_text(path)
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        examples = []
        empty = blank = 0
        prev_end = 0
        while True:
            start = prev_end + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise UsageError(f"{path}:{start}: bad CSV quoting in the record starting here ({e})") from None
            prev_end = reader.line_num
            where = f"{path}:{start}"
            if not row:
                blank += 1
                continue
            if len(row) != 2:
                raise UsageError(f"{where}: expected 2 columns (label,text), got {len(row)}"
                                 + (" (quote texts that contain commas)" if len(row) > 2 else ""))
            raw = row[0].strip()
            if not _INT.fullmatch(raw):
                raise UsageError(f"{where}: label {row[0]!r} is not an integer")
            label = int(raw)
            if label not in self._label_index:
                raise UsageError(f"{where}: {self._label_error(label)}")
            text_a = "" if row[1] in PANDAS_NA else row[1]
            empty += text_a == ""
            examples.append(InputExample(guid=f"{split}-{len(examples) + blank}", text_a=text_a,
                                         label=label))
        _warn_counts(path, empty, blank)
        return _finish(path, examples)


# --------------------------------------------------------------------------------------------
# registry

_BIN = ["0", "1"]
_NLI3 = ["contradiction", "entailment", "neutral"]
_NLI2 = ["entailment", "not_entailment"]
_MNLI_FILES = {"train": "train", "dev": "dev_matched", "test": "test_matched"}
_MNLI_MM_FILES = {"train": "train", "dev": "dev_matched", "test": "test_mismatched"}


def _build() -> Dict[str, Task]:
    tasks = [
        TsvTask("sst-2", "SST-2", _BIN, text_a=0, text_b=None, label=1),
        CsvTask("sst-5", "sst-5", list(range(5))),
        CsvTask("mr", "mr", [0, 1]),
        CsvTask("cr", "cr", [0, 1]),
        CsvTask("mpqa", "mpqa", [0, 1]),
        CsvTask("subj", "subj", [0, 1]),
        CsvTask("trec", "trec", list(range(6))),
        TsvTask("cola", "CoLA", _BIN, text_a=3, text_b=None, label=1, header=False, metric="mcc"),
        TsvTask("mrpc", "MRPC", _BIN, text_a=3, text_b=4, label=0, metric="acc_and_f1"),
        TsvTask("qqp", "QQP", _BIN, text_a=3, text_b=4, label=5, skip_short_rows=True,
                metric="acc_and_f1"),
        RegressionTsvTask("sts-b", "STS-B", [None], text_a=7, text_b=8, label=-1,
                          metric="pearson_and_spearman"),
        TsvTask("mnli", "MNLI", _NLI3, text_a=8, text_b=9, label=-1, metric="mnli",
                file_names=_MNLI_FILES),
        MnliMismatchedTask("mnli-mm", "MNLI", _NLI3, text_a=8, text_b=9, label=-1, metric="mnli-mm",
                           file_names=_MNLI_MM_FILES),
        TsvTask("snli", "SNLI", _NLI3, text_a=7, text_b=8, label=-1),
        TsvTask("qnli", "QNLI", _NLI2, text_a=1, text_b=2, label=-1),
        TsvTask("rte", "RTE", _NLI2, text_a=1, text_b=2, label=-1),
        TsvTask("wnli", "WNLI", _BIN, text_a=1, text_b=2, label=-1),
        CsvTask("uci-sentiment", "uci-sentiment", [0, 1]),
    ]
    return {t.name: t for t in tasks}


TASKS: Dict[str, Task] = _build()


def get_task(name: str) -> Task:
    """The task for a `--task_name` value (case-insensitive: SST-2 → sst-2)."""
    key = str(name).lower()
    if key not in TASKS:
        raise UsageError(f"--task_name {name}: unknown task; known: {', '.join(TASKS)}")
    return TASKS[key]


DEV_OBJECTIVE_KEYS = ("eval_mnli/acc", "eval_mnli-mm/acc", "eval_f1", "eval_mcc", "eval_pearson",
                      "eval_acc")


def dev_objective(metrics: dict) -> float:
    """The model-selection score: the first of DEV_OBJECTIVE_KEYS present in `metrics`."""
    for key in DEV_OBJECTIVE_KEYS:
        if key in metrics:
            return float(metrics[key])
    raise UsageError(f"dev metrics {sorted(metrics)}: none of {', '.join(DEV_OBJECTIVE_KEYS)} present")
