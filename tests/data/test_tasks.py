"""Task processors (mezo.data.tasks): reading rules, labels, metrics, and bad-input messages."""
import logging
import math
import os

import numpy as np
import pytest

from mezo.errors import UsageError
from mezo.data.tasks import TASKS, InputExample, Task, dev_objective, get_task


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    if isinstance(text, bytes):
        with open(path, "wb") as f:
            f.write(text)
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return str(path)


def tsv(*rows):
    return "".join("\t".join(r) + "\n" for r in rows)


def raises_at(exc_info, path, line=None):
    msg = str(exc_info.value)
    assert "\n" not in msg
    prefix = f"{path}:{line}:" if line is not None else f"{path}"
    assert msg.startswith(prefix), msg
    return msg


# --------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_attributes():
    expected = {
        "sst-2": ("SST-2", ["0", "1"], "classification"),
        "sst-5": ("sst-5", [0, 1, 2, 3, 4], "classification"),
        "mr": ("mr", [0, 1], "classification"),
        "cr": ("cr", [0, 1], "classification"),
        "mpqa": ("mpqa", [0, 1], "classification"),
        "subj": ("subj", [0, 1], "classification"),
        "trec": ("trec", [0, 1, 2, 3, 4, 5], "classification"),
        "cola": ("CoLA", ["0", "1"], "classification"),
        "mrpc": ("MRPC", ["0", "1"], "classification"),
        "qqp": ("QQP", ["0", "1"], "classification"),
        "sts-b": ("STS-B", [None], "regression"),
        "mnli": ("MNLI", ["contradiction", "entailment", "neutral"], "classification"),
        "mnli-mm": ("MNLI", ["contradiction", "entailment", "neutral"], "classification"),
        "snli": ("SNLI", ["contradiction", "entailment", "neutral"], "classification"),
        "qnli": ("QNLI", ["entailment", "not_entailment"], "classification"),
        "rte": ("RTE", ["entailment", "not_entailment"], "classification"),
        "wnli": ("WNLI", ["0", "1"], "classification"),
        "uci-sentiment": ("uci-sentiment", [0, 1], "classification"),
    }
    assert list(TASKS) == list(expected)
    for name, (dir_name, labels, mode) in expected.items():
        t = TASKS[name]
        assert isinstance(t, Task)
        assert (t.name, t.dir_name, t.label_list, t.output_mode) == (name, dir_name, labels, mode)
        assert t.num_labels == len(labels)
        if name == "sts-b":
            assert t.regression_bounds == (0.0, 5.0) and t.median == 2.5
        else:
            assert t.regression_bounds is None and t.median is None


def test_get_task_case_insensitive_and_unknown():
    assert get_task("SST-2") is TASKS["sst-2"]
    assert get_task("MNLI-MM") is TASKS["mnli-mm"]
    assert get_task("CoLA").name == "cola"
    with pytest.raises(UsageError) as e:
        get_task("foo")
    assert str(e.value).startswith("--task_name foo: unknown task; known: sst-2, sst-5,")


def test_label_ids_in_label_list_order():
    for t in TASKS.values():
        if t.output_mode == "classification":
            assert [t.label_id(lab) for lab in t.label_list] == list(range(t.num_labels))
    assert get_task("mnli").label_id("neutral") == 2
    assert get_task("rte").label_id("not_entailment") == 1
    assert get_task("trec").label_id(5) == 5
    # raw label types must match, as in the reference
    for bad_task, bad in [("sst-2", 1), ("mr", "1"), ("mr", 1.0), ("mr", True), ("sst-2", "2"),
                          ("mnli", "Entailment"), ("sst-2", None), ("mr", [1])]:
        with pytest.raises(UsageError) as e:
            get_task(bad_task).label_id(bad)
        assert "unknown label" in str(e.value)
    stsb = get_task("sts-b")
    assert stsb.label_id(3.2) == 0
    with pytest.raises(UsageError):
        stsb.label_id(7.0)


# --------------------------------------------------------------------------------------------
# readers, one per task, in the real file layout


def test_sst2(tmp_path, caplog):
    d = tmp_path / "SST-2"
    write(d / "train.tsv", tsv(["sentence", "label"], ["a gorgeous film , really ", "1"],
                               ["\"quoted\" start", "0"], ["", "1"]))
    t = get_task("sst-2")
    with caplog.at_level(logging.WARNING):
        ex = t.read_examples(str(d), "train")
    assert ex == [InputExample("train-1", "a gorgeous film , really ", None, "1"),
                  InputExample("train-2", "\"quoted\" start", None, "0"),  # no quote handling
                  InputExample("train-3", "", None, "1")]
    assert "1 empty texts" in caplog.text
    assert t.split_path(str(d), "test") == os.path.join(str(d), "test.tsv")


def test_crlf_and_bom(tmp_path):
    d = tmp_path / "SST-2"
    write(d / "dev.tsv", "\ufeffsentence\tlabel\r\nfine\t1\r\nbad\t0\r\n")
    ex = get_task("sst-2").read_examples(str(d), "dev")
    assert [(e.guid, e.text_a, e.label) for e in ex] == [("dev-1", "fine", "1"), ("dev-2", "bad", "0")]


def test_cola_has_no_header(tmp_path):
    d = tmp_path / "CoLA"
    write(d / "train.tsv", tsv(["gj04", "1", "", "The sailors rode the breeze clear of the rocks."],
                               ["gj04", "0", "*", "The more we study verbs, the crazier they get get."]))
    ex = get_task("cola").read_examples(str(d), "train")
    assert [(e.guid, e.text_a, e.label) for e in ex] == [
        ("train-0", "The sailors rode the breeze clear of the rocks.", "1"),
        ("train-1", "The more we study verbs, the crazier they get get.", "0")]


def test_mrpc(tmp_path):
    d = tmp_path / "MRPC"
    write(d / "test.tsv", tsv(["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                              ["1", "702876", "702977", "He said.", "He says."]))
    ex = get_task("mrpc").read_examples(str(d), "test")
    assert ex == [InputExample("test-1", "He said.", "He says.", "1")]


def test_qqp_skips_short_rows_with_count(tmp_path, caplog):
    d = tmp_path / "QQP"
    write(d / "train.tsv", tsv(["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                               ["1", "1", "2", "How?", "Why?", "0"],
                               ["2", "3", "4", "broken row"],
                               ["3", "5", "6", "What?", "What!", "1"],
                               ["4", "7"]))
    with caplog.at_level(logging.WARNING):
        ex = get_task("qqp").read_examples(str(d), "train")
    assert [(e.guid, e.text_a, e.text_b, e.label) for e in ex] == [
        ("train-1", "How?", "Why?", "0"), ("train-3", "What?", "What!", "1")]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"{d / 'train.tsv'}: skipped 2 rows with fewer than 6 columns"]


STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
               "sentence1", "sentence2", "score"]


def test_stsb_float_labels(tmp_path):
    d = tmp_path / "STS-B"
    write(d / "dev.tsv", tsv(STSB_HEADER,
                             ["0", "g", "f", "2012", "1", "s", "s", "A man.", "A person.", "5.000"],
                             ["1", "g", "f", "2012", "2", "s", "s", "A cat.", "A dog.", "0.5"]))
    t = get_task("sts-b")
    ex = t.read_examples(str(d), "dev")
    assert [(e.text_a, e.text_b, e.label) for e in ex] == [("A man.", "A person.", 5.0),
                                                          ("A cat.", "A dog.", 0.5)]
    assert all(isinstance(e.label, float) for e in ex)


def mnli_row(i, s1, s2, label, extra=()):
    return [str(i), "p", "q", "genre", "b1", "b2", "p1", "p2", s1, s2, *extra, label]


MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
               "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
               "sentence2", "label1", "gold_label"]


def test_mnli_matched_and_mismatched(tmp_path):
    d = tmp_path / "MNLI"
    write(d / "train.tsv", tsv(MNLI_HEADER, mnli_row(0, "P0", "H0", "neutral", ["neutral"])))
    write(d / "dev_matched.tsv", tsv(MNLI_HEADER, mnli_row(1, "Pm", "Hm", "entailment", ["entailment"])))
    write(d / "test_matched.tsv", tsv(MNLI_HEADER, mnli_row(2, "Tm", "Um", "contradiction",
                                                             ["neutral", "contradiction", "x", "y"])))
    write(d / "test_mismatched.tsv", tsv(MNLI_HEADER, mnli_row(3, "Tmm", "Umm", "neutral", ["neutral"])))
    m, mm = get_task("mnli"), get_task("mnli-mm")
    assert m.read_examples(str(d), "train") == [InputExample("train-1", "P0", "H0", "neutral")]
    assert m.read_examples(str(d), "test") == [InputExample("test-1", "Tm", "Um", "contradiction")]
    assert m.split_path(str(d), "dev").endswith("dev_matched.tsv")
    assert mm.read_examples(str(d), "test") == [InputExample("test-1", "Tmm", "Umm", "neutral")]
    # a generated k-shot folder has no dev_mismatched.tsv: mnli-mm selects on dev_matched.tsv
    assert mm.split_path(str(d), "dev").endswith("dev_matched.tsv")
    assert mm.read_examples(str(d), "dev")[0].text_a == "Pm"
    # an original GLUE folder has one: then it is used
    write(d / "dev_mismatched.tsv", tsv(MNLI_HEADER, mnli_row(4, "Dmm", "Emm", "neutral", ["neutral"])))
    assert mm.split_path(str(d), "dev").endswith("dev_mismatched.tsv")
    assert mm.read_examples(str(d), "dev")[0].text_a == "Dmm"
    assert m.read_examples(str(d), "dev")[0].text_a == "Pm"


def test_snli_variable_columns(tmp_path):
    d = tmp_path / "SNLI"
    head = ["index", "captionID", "pairID", "s1bp", "s2bp", "s1p", "s2p", "sentence1", "sentence2",
            "label1", "gold_label"]
    base = ["0", "c", "p", "b", "b", "p", "p", "A dog runs.", "An animal moves."]
    write(d / "test.tsv", tsv(head, base + ["entailment", "entailment"],
                              base + ["neutral", "neutral", "neutral", "x", "y", "contradiction"]))
    ex = get_task("snli").read_examples(str(d), "test")
    assert [(e.text_a, e.text_b, e.label) for e in ex] == [
        ("A dog runs.", "An animal moves.", "entailment"),
        ("A dog runs.", "An animal moves.", "contradiction")]


@pytest.mark.parametrize("name,dirname,label", [("qnli", "QNLI", "not_entailment"),
                                                ("rte", "RTE", "entailment"),
                                                ("wnli", "WNLI", "1")])
def test_pair_tasks_index_s1_s2_label(tmp_path, name, dirname, label):
    d = tmp_path / dirname
    write(d / "train.tsv", tsv(["index", "sentence1", "sentence2", "label"], ["0", "Q?", "A.", label]))
    assert get_task(name).read_examples(str(d), "train") == [InputExample("train-1", "Q?", "A.", label)]


CSV_TEXT = ('1,"a gorgeous, witty film"\n'
            '0,"he said ""no"" , twice"\n'
            '0,plain text with \'single\' quotes\n'
            '1,\n'
            '1,"two\nlines"\n'
            '0,last\n')


@pytest.mark.parametrize("name", ["sst-5", "mr", "cr", "mpqa", "subj", "trec", "uci-sentiment"])
def test_csv_tasks(tmp_path, caplog, name):
    t = get_task(name)
    d = tmp_path / t.dir_name
    write(d / "train.csv", CSV_TEXT)
    with caplog.at_level(logging.WARNING):
        ex = t.read_examples(str(d), "train")
    assert ex == [InputExample("train-0", "a gorgeous, witty film", None, 1),
                  InputExample("train-1", 'he said "no" , twice', None, 0),
                  InputExample("train-2", "plain text with 'single' quotes", None, 0),
                  InputExample("train-3", "", None, 1),
                  InputExample("train-4", "two\nlines", None, 1),
                  InputExample("train-5", "last", None, 0)]
    assert all(type(e.label) is int for e in ex)
    assert "1 empty texts" in caplog.text
    assert t.split_path(str(d), "dev") == os.path.join(str(d), "dev.csv")


def test_csv_multiclass_labels(tmp_path):
    d = tmp_path / "trec"
    write(d / "test.csv", "5,How far is it?\n0,What is X?\n")
    t = get_task("trec")
    ex = t.read_examples(str(d), "test")
    assert [t.label_id(e.label) for e in ex] == [5, 0]


def test_blank_lines_skipped(tmp_path, caplog):
    d = tmp_path / "mr"
    write(d / "train.csv", "1,good\n\n0,bad\n")
    with caplog.at_level(logging.WARNING):
        ex = get_task("mr").read_examples(str(d), "train")
    assert [(e.guid, e.text_a) for e in ex] == [("train-0", "good"), ("train-2", "bad")]
    assert "skipped 1 blank lines" in caplog.text


# --------------------------------------------------------------------------------------------
# bad input → one-line UsageError naming file:line


def test_missing_split_file(tmp_path):
    with pytest.raises(UsageError) as e:
        get_task("sst-2").read_examples(str(tmp_path), "dev")
    assert str(e.value) == f"{tmp_path / 'dev.tsv'}: split file not found"
    with pytest.raises(UsageError) as e:
        get_task("sst-2").read_examples(str(tmp_path), "validation")
    assert str(e.value).startswith("split 'validation': unknown split")


@pytest.mark.parametrize("name,dirname,content,line,needle", [
    ("sst-2", "SST-2", "sentence\tlabel\ngood\t1\nno label column\n", 3,
     "expected at least 2 tab-separated columns, got 1"),
    ("sst-2", "SST-2", "sentence\tlabel\ngood\tpositive\n", 2,
     "unknown label 'positive' for task sst-2; expected one of '0', '1'"),
    ("sst-2", "SST-2", "sentence\tlabel\ngood\t1 \n", 2, "unknown label '1 '"),
    ("cola", "CoLA", "gj04\t1\t\tok.\ngj04\t1\tonly three\n", 2,
     "expected at least 4 tab-separated columns, got 3"),
    ("rte", "RTE", "index\tsentence1\tsentence2\tlabel\n0\tA\tB\tcontradiction\n", 2,
     "unknown label 'contradiction' for task rte"),
    ("rte", "RTE", "index\tsentence1\tsentence2\tlabel\n0\tA\tentailment\n", 2,
     "expected at least 4 tab-separated columns, got 3"),
    ("mnli", "MNLI", "h\n" + "\t".join(["0"] * 10) + "\n", 2,
     "expected at least 11 tab-separated columns, got 10"),
    ("sts-b", "STS-B", "\t".join(STSB_HEADER) + "\n" + "\t".join(["x"] * 9 + ["high"]) + "\n", 2,
     "label 'high' is not a number in [0.0, 5.0]"),
    ("sts-b", "STS-B", "\t".join(STSB_HEADER) + "\n" + "\t".join(["x"] * 9 + ["5.5"]) + "\n", 2,
     "label '5.5' is not a number in [0.0, 5.0]"),
    ("mr", "mr", "1,good\n0,bad\npositive,meh\n", 3, "label 'positive' is not an integer"),
    ("mr", "mr", "1,good\n1.0,bad\n", 2, "label '1.0' is not an integer"),
    ("mr", "mr", "1,good\n2,bad\n", 2, "unknown label 2 for task mr; expected one of 0, 1"),
    ("mr", "mr", '1,"two\nlines"\n0,a,b\n', 3,
     "expected 2 columns (label,text), got 3 (quote texts that contain commas)"),
    ("mr", "mr", "1,good\n0\n", 2, "expected 2 columns (label,text), got 1"),
    ("sst-5", "sst-5", "4,great\n5,too great\n", 2, "unknown label 5 for task sst-5"),
])
def test_bad_rows_name_file_and_line(tmp_path, name, dirname, content, line, needle):
    t = get_task(name)
    d = tmp_path / dirname
    path = write(d / ("train" + t.extension), content)
    with pytest.raises(UsageError) as e:
        t.read_examples(str(d), "train")
    msg = raises_at(e, path, line)
    assert needle in msg, msg


def test_not_utf8(tmp_path):
    d = tmp_path / "SST-2"
    path = write(d / "train.tsv", b"sentence\tlabel\ngood\t1\nbad \xff\t0\n")
    with pytest.raises(UsageError) as e:
        get_task("sst-2").read_examples(str(d), "train")
    assert "not valid UTF-8" in raises_at(e, path, 3)


@pytest.mark.parametrize("name,content,line,needle", [
    ("mr", '1,good\n0,"stray" quote\n', 2, "bad CSV quoting"),
    ("mr", '1,good\n0,"never closed\nmore\n', 2, "bad CSV quoting"),
    ("mr", "1,good\n0,bad\x00text\n", 2, "NUL byte"),
    ("sst-2", "sentence\tlabel\n\x00\t1\n", 2, "NUL byte"),
])
def test_malformed_quoting_and_nul_name_file_and_line(tmp_path, name, content, line, needle):
    t = get_task(name)
    path = write(tmp_path / ("train" + t.extension), content)
    with pytest.raises(UsageError) as e:
        t.read_examples(str(tmp_path), "train")
    assert needle in raises_at(e, path, line)


@pytest.mark.parametrize("name,content", [("mr", ""), ("mr", "\n\n"), ("sst-2", "sentence\tlabel\n"),
                                          ("cola", "")])
def test_empty_split_is_an_error(tmp_path, name, content):
    t = get_task(name)
    path = write(tmp_path / ("dev" + t.extension), content)
    with pytest.raises(UsageError) as e:
        t.read_examples(str(tmp_path), "dev")
    assert str(e.value) == f"{path}: no examples (an empty split)"


def test_split_count_logged(tmp_path, caplog):
    path = write(tmp_path / "train.csv", "1,a\n0,b\n1,c\n")
    with caplog.at_level(logging.INFO, logger="mezo.data.tasks"):
        get_task("mr").read_examples(str(tmp_path), "train")
    assert f"{path}: 3 examples" in caplog.text


def test_k_shot_warning_names_the_counts(caplog):
    from mezo.data.tasks import check_k_shot
    t = get_task("mr")
    two_each = [InputExample(f"train-{i}", "x", None, i % 2) for i in range(4)]
    with caplog.at_level(logging.WARNING):
        assert check_k_shot(t, two_each, 2, "tr.csv")
        assert caplog.text == ""
        assert not check_k_shot(t, two_each[:3], 2, "tr.csv")
    assert "tr.csv: not 2 examples per label (--num_k 2): 0: 2, 1: 1" in caplog.text
    assert check_k_shot(get_task("sts-b"), [], 16)  # regression: no label classes to count


# The rule, restated from pandas' documentation of `na_values` ("By default the following values are
# interpreted as NaN"): the reference's pd.read_csv(path, header=None) turns these texts into NaN, which
# the reference then uses as "". Anything else - other spellings, surrounding spaces - stays text.
PANDAS_DEFAULT_NA = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
NOT_NA = [" NA", "NA ", "na", "Nan", "NONE", "none", "N/a", "-NA", "#n/a", "NaN!", "null.", "0", "N A"]


def test_csv_pandas_missing_values_become_empty_text(tmp_path):
    from mezo.data.tasks import PANDAS_NA
    assert PANDAS_NA == set(PANDAS_DEFAULT_NA)  # the pinned pandas still has the documented set
    texts = PANDAS_DEFAULT_NA + ['"NA"', '"null"'] + NOT_NA
    write(tmp_path / "train.csv", "".join(f"{i % 2},{t}\n" for i, t in enumerate(texts)))
    got = [e.text_a for e in get_task("mr").read_examples(str(tmp_path), "train")]
    expected = [""] * (len(PANDAS_DEFAULT_NA) + 2) + NOT_NA
    assert got == expected


@pytest.mark.parametrize("name", ["sst-5", "mr", "cr", "mpqa", "subj", "trec"])
def test_csv_texts_agree_with_pandas_read_csv(tmp_path, name):
    """Independent check: pandas itself, as the reference calls it, with NaN -> ""."""
    import pandas as pd
    rows = ["0,NA", '1,"a, b"', "0,None", '1,"x ""q"" y"', "0, nan", "1,", "0,null", "1,text NA", '0,"multi\nline"',
            "1,#N/A", "0,<NA>", "1,n/a", "0,-1.#IND"]
    path = write(tmp_path / "test.csv", "\n".join(rows) + "\n")
    frame = pd.read_csv(path, header=None)
    expected = ["" if isinstance(v, float) and math.isnan(v) else v for v in frame[1]]
    got = get_task(name).read_examples(str(tmp_path), "test")
    assert [e.text_a for e in got] == expected
    assert [e.label for e in got] == frame[0].tolist()


# --------------------------------------------------------------------------------------------
# metrics


def test_accuracy():
    m = get_task("sst-2").compute_metrics(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0]))
    assert m == {"acc": 0.5}
    assert get_task("trec").compute_metrics(np.array([5, 2, 0]), np.array([5, 2, 1])) == {"acc": pytest.approx(2 / 3)}


def test_f1_and_mcc_hand_computed():
    preds = np.array([1, 1, 0, 0, 1])
    labels = np.array([1, 0, 0, 1, 1])
    # tp = 2, fp = 1, fn = 1, tn = 1
    m = get_task("mrpc").compute_metrics(preds, labels)
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["acc_and_f1"] == pytest.approx((3 / 5 + 4 / 6) / 2)
    assert set(get_task("qqp").compute_metrics(preds, labels)) == {"acc", "f1", "acc_and_f1"}
    # mcc = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3*3*2*2)
    assert get_task("cola").compute_metrics(preds, labels) == {"mcc": pytest.approx(1 / 6)}
    # degenerate cases: constant prediction → mcc 0; no positives → f1 0
    assert get_task("cola").compute_metrics(np.zeros(4, int), np.array([0, 1, 0, 1]))["mcc"] == 0.0
    assert get_task("mrpc").compute_metrics(np.zeros(3, int), np.zeros(3, int))["f1"] == 0.0


def test_mcc_matches_sklearn():
    from sklearn.metrics import f1_score, matthews_corrcoef
    rng = np.random.RandomState(0)
    for _ in range(5):
        p, y = rng.randint(0, 2, 50), rng.randint(0, 2, 50)
        assert get_task("cola").compute_metrics(p, y)["mcc"] == pytest.approx(matthews_corrcoef(y, p))
        assert get_task("mrpc").compute_metrics(p, y)["f1"] == pytest.approx(f1_score(y, p))


def test_mnli_keys():
    p, y = np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1])
    assert get_task("mnli").compute_metrics(p, y) == {"mnli/acc": 0.75}
    assert get_task("mnli-mm").compute_metrics(p, y) == {"mnli-mm/acc": 0.75}
    assert get_task("snli").compute_metrics(p, y) == {"acc": 0.75}


def test_pearson_spearman_hand_computed():
    t = get_task("sts-b")
    # centred: x = (-1, 0, 1), y = (-1, 1, 0): r = 1 / sqrt(2 * 2) = 0.5; ranks are the values
    m = t.compute_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]))
    assert m["pearson"] == pytest.approx(0.5)
    assert m["spearmanr"] == pytest.approx(0.5)
    assert m["corr"] == pytest.approx(0.5)
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4)
    # centred (-1.5, 0, 0, 1.5) · (-1.5, -.5, .5, 1.5) = 4.5; |x|² = 4.5, |y|² = 5
    m = t.compute_metrics(np.array([0.1, 0.7, 0.7, 0.9]), np.array([1.0, 2.0, 3.0, 4.5]))
    assert m["spearmanr"] == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    x, y = np.array([0.1, 0.7, 0.7, 0.9]), np.array([1.0, 2.0, 3.0, 4.5])
    xc, yc = x - x.mean(), y - y.mean()
    assert m["pearson"] == pytest.approx((xc @ yc) / math.sqrt((xc @ xc) * (yc @ yc)))
    assert m["corr"] == pytest.approx((m["pearson"] + m["spearmanr"]) / 2)
    # constant predictions (e.g. argmax 0/1 all the same): undefined → nan, not a crash
    assert math.isnan(t.compute_metrics(np.ones(3), np.array([1.0, 2.0, 3.0]))["pearson"])


def test_compute_metrics_shape_mismatch():
    with pytest.raises(ValueError):
        get_task("sst-2").compute_metrics(np.array([1, 0]), np.array([1]))


# --------------------------------------------------------------------------------------------
# dev objective


def test_dev_objective_key_order():
    full = {"eval_acc": 0.1, "eval_pearson": 0.2, "eval_mcc": 0.3, "eval_f1": 0.4,
            "eval_mnli-mm/acc": 0.5, "eval_mnli/acc": 0.6, "eval_loss": 9.0}
    order = ["eval_mnli/acc", "eval_mnli-mm/acc", "eval_f1", "eval_mcc", "eval_pearson", "eval_acc"]
    for key in order:
        assert dev_objective(full) == full[key]
        del full[key]
    assert dev_objective({"eval_acc": 0.7, "eval_f1": 0.2, "eval_acc_and_f1": 0.45}) == 0.2
    with pytest.raises(UsageError) as e:
        dev_objective({"eval_loss": 1.0})
    assert "none of eval_mnli/acc" in str(e.value)
