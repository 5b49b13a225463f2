"""mezo.data.kshot (tools/generate_k_shot_data.py): exact rows for small fake corpora, in every mode.

Expected outputs are computed here on their own, with explicit legacy-NumPy calls
(np.random.seed + np.random.shuffle on a copy) and grouping by hand, following
docs/behaviour.md, "k-shot splits".
"""
import csv
import io
import os

import numpy as np
import pandas as pd
import pytest

import tiny

from mezo.errors import UsageError
from mezo.data.tasks import get_task

ROOT = tiny.ROOT


from mezo.data import kshot as gen

K = 4
SEEDS = [100, 13]  # a seed order other than sorted, as in the default list


# --------------------------------------------------------------------------------------------
# fake original corpora


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


SST2_HEADER = "sentence\tlabel\n"
SST2_TRAIN = [f"sst sentence {i} , ok\t{1 if i % 3 else 0}\n" for i in range(30)]
SST2_DEV = [f"dev sentence {i}\t{i % 2}\n" for i in range(1005)]  # > 1000 data lines

RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
RTE_TRAIN = [f"{i}\tpremise {i}\thypothesis {i}\t{'entailment' if i % 4 else 'not_entailment'}\n"
             for i in range(25)]
RTE_DEV = [f"{i}\tdp {i}\tdh {i}\tentailment\n" for i in range(1000)]  # 1001 lines with header: no cap

COLA_TRAIN = [f"src{i % 3}\t{0 if i % 5 == 0 else 1}\t{'' if i % 5 else '*'}\tcola sentence {i}.\n"
              for i in range(30)]
COLA_DEV = [f"dsrc\t{i % 2}\t\tcola dev {i}.\n" for i in range(1003)]

MNLI_HEADER = "index\tpromptID\tpairID\tgenre\tb1\tb2\tp1\tp2\tsentence1\tsentence2\tlabel1\tgold_label\n"
NLI3 = ["contradiction", "entailment", "neutral"]


def mnli_line(tag, i, label):
    return f"{i}\tp\tq\tg\tb\tb\tp\tp\t{tag} premise {i}\t{tag} hypothesis {i}\t{label}\t{label}\n"


MNLI_TRAIN = [mnli_line("train", i, NLI3[(i * 7) % 3]) for i in range(36)]
MNLI_DEV_M = [mnli_line("m", i, NLI3[i % 3]) for i in range(5)]
MNLI_DEV_MM = [mnli_line("mm", i, NLI3[i % 3]) for i in range(1002)]

STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
STSB_SCORES = ["0.000", "2.499", "2.500", "4.8", "1.2", "3.0", "5.000", "0.6"]
STSB_TRAIN = [f"{i}\tg\tf\t2012\t{i}\ts\ts\tfirst {i}\tsecond {i}\t{STSB_SCORES[i % 8]}\n"
              for i in range(24)]
STSB_DEV = [f"{i}\tg\tf\t2012\t{i}\ts\ts\tdev a {i}\tdev b {i}\t{STSB_SCORES[i % 8]}\n" for i in range(6)]

MR_TRAIN = [[i % 2, f"mr text {i}"] for i in range(28)]
MR_TRAIN[5] = [1, 'good, "really" good']      # a comma and quotes: must be quoted on output
MR_TRAIN[8] = [0, "  leading and trailing  "]  # whitespace kept
MR_TEST = [[(i * 7) % 2, f"mr test {i}"] for i in range(1003)]  # > 1000 rows
TREC_TRAIN = [[(i * 5) % 6, f"question {i}?"] for i in range(40)]
TREC_TEST = [[i % 6, f"test question {i}?"] for i in range(20)]


def csv_text(rows):
    """How pandas to_csv(header=False, index=False) writes string/int rows (QUOTE_MINIMAL)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


@pytest.fixture()
def corpora(tmp_path):
    orig = str(tmp_path / "original")
    write(f"{orig}/SST-2/train.tsv", SST2_HEADER + "".join(SST2_TRAIN))
    write(f"{orig}/SST-2/dev.tsv", SST2_HEADER + "".join(SST2_DEV))
    write(f"{orig}/RTE/train.tsv", RTE_HEADER + "".join(RTE_TRAIN))
    write(f"{orig}/RTE/dev.tsv", RTE_HEADER + "".join(RTE_DEV))
    write(f"{orig}/CoLA/train.tsv", "".join(COLA_TRAIN))
    write(f"{orig}/CoLA/dev.tsv", "".join(COLA_DEV))
    write(f"{orig}/MNLI/train.tsv", MNLI_HEADER + "".join(MNLI_TRAIN))
    write(f"{orig}/MNLI/dev_matched.tsv", MNLI_HEADER + "".join(MNLI_DEV_M))
    write(f"{orig}/MNLI/dev_mismatched.tsv", MNLI_HEADER + "".join(MNLI_DEV_MM))
    write(f"{orig}/STS-B/train.tsv", STSB_HEADER + "".join(STSB_TRAIN))
    write(f"{orig}/STS-B/dev.tsv", STSB_HEADER + "".join(STSB_DEV))
    write(f"{orig}/mr/train.csv", csv_text(MR_TRAIN))
    write(f"{orig}/mr/test.csv", csv_text(MR_TEST))
    write(f"{orig}/trec/train.csv", csv_text(TREC_TRAIN))
    write(f"{orig}/trec/test.csv", csv_text(TREC_TEST))
    return orig


def run(corpora, tmp_path, mode, tasks, seeds=SEEDS, k=K):
    out = str(tmp_path / "out")
    logs = []
    datasets = gen.load_datasets(corpora, tasks, log=logs.append)
    gen.generate(datasets, k, seeds, out, mode, log=logs.append)
    return out, logs


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


# --------------------------------------------------------------------------------------------
# independent expectations


def shuffled(rows, seed):
    rows = list(rows)
    np.random.seed(seed)
    np.random.shuffle(rows)
    return rows


def group(rows, label_of):
    groups = {}
    for r in rows:
        groups.setdefault(label_of(r), []).append(r)
    return groups


def take(groups, lo, hi):
    out = []
    for rows in groups.values():
        out.extend(rows[lo:hi])
    return out


def last_col(line):
    return line.rstrip("\n").split("\t")[-1]


# --------------------------------------------------------------------------------------------
# GLUE-style


@pytest.mark.parametrize("mode", ["k-shot", "k-shot-10x", "k-shot-1k-test"])
def test_sst2_exact_rows(corpora, tmp_path, mode):
    out, _ = run(corpora, tmp_path, mode, ["SST-2"])
    hi = (11 if mode == "k-shot-10x" else 2) * K
    for seed in SEEDS:
        d = f"{out}/{mode}/SST-2/{K}-{seed}"
        assert sorted(os.listdir(d)) == ["dev.tsv", "test.tsv", "train.tsv"]
        sh = shuffled(SST2_TRAIN, seed)
        g = group(sh, last_col)
        assert list(g) == list(dict.fromkeys(last_col(x) for x in sh)) and sorted(g) == ["0", "1"]
        assert read(f"{d}/train.tsv") == SST2_HEADER + "".join(take(g, 0, K))
        assert read(f"{d}/dev.tsv") == SST2_HEADER + "".join(take(g, K, hi))
        if mode == "k-shot-1k-test":
            expected_test = SST2_HEADER + "".join(shuffled(SST2_DEV, 42)[:1000])
        else:
            expected_test = SST2_HEADER + "".join(SST2_DEV)
        assert read(f"{d}/test.tsv") == expected_test
    # byte level: header first, label-grouped, k per label
    text = read(f"{out}/{mode}/SST-2/{K}-100/train.tsv")
    assert text.startswith("sentence\tlabel\nsst sentence ")
    labels = [line.split("\t")[1] for line in text.splitlines()[1:]]
    assert len(labels) == 2 * K and labels[:K] == [labels[0]] * K and labels[K:] == [labels[K]] * K


def test_10x_dev_is_rows_k_to_11k(corpora, tmp_path):
    out, _ = run(corpora, tmp_path, "k-shot-10x", ["SST-2"], seeds=[13], k=2)
    g = group(shuffled(SST2_TRAIN, 13), last_col)
    dev = read(f"{out}/k-shot-10x/SST-2/2-13/dev.tsv").splitlines(keepends=True)[1:]
    assert dev == take(g, 2, 22)
    # 10 label-0 rows exist: dev holds rows 2..9 of that label (a shorter file, no error)
    assert sum(1 for line in dev if last_col(line) == "0") == 10 - 2


def test_1k_cap_counts_data_lines_not_header(corpora, tmp_path):
    # RTE dev: header + 1000 data lines = 1001 lines: not more than 1000 data lines, so it is
    # written unchanged (no shuffle)
    out, _ = run(corpora, tmp_path, "k-shot-1k-test", ["RTE"])
    for seed in SEEDS:
        d = f"{out}/k-shot-1k-test/RTE/{K}-{seed}"
        assert read(f"{d}/test.tsv") == RTE_HEADER + "".join(RTE_DEV)
        g = group(shuffled(RTE_TRAIN, seed), last_col)
        assert read(f"{d}/train.tsv") == RTE_HEADER + "".join(take(g, 0, K))
        assert read(f"{d}/dev.tsv") == RTE_HEADER + "".join(take(g, K, 2 * K))


def test_cola_cumulative_shuffle_quirk(corpora, tmp_path):
    out, _ = run(corpora, tmp_path, "k-shot-1k-test", ["CoLA"])
    train_state = list(COLA_TRAIN)  # the generator shuffles its loaded list in place
    dev_state = list(COLA_DEV)
    label = lambda line: line.split("\t")[1]  # noqa: E731
    for n, seed in enumerate(SEEDS):
        np.random.seed(seed)
        np.random.shuffle(train_state)
        np.random.seed(42)
        np.random.shuffle(dev_state)
        d = f"{out}/k-shot-1k-test/CoLA/{K}-{seed}"
        g = group(train_state, label)
        assert read(f"{d}/train.tsv") == "".join(take(g, 0, K))  # no header
        assert read(f"{d}/dev.tsv") == "".join(take(g, K, 2 * K))
        assert read(f"{d}/test.tsv") == "".join(dev_state[:1000])
        if n == 1:
            # the second seed's split is NOT what a fresh shuffle would give
            fresh = group(shuffled(COLA_TRAIN, seed), label)
            assert read(f"{d}/train.tsv") != "".join(take(fresh, 0, K))
            assert read(f"{d}/test.tsv") != "".join(shuffled(COLA_DEV, 42)[:1000])
    # the first seed equals a fresh shuffle
    g = group(shuffled(COLA_TRAIN, SEEDS[0]), label)
    assert read(f"{out}/k-shot-1k-test/CoLA/{K}-{SEEDS[0]}/train.tsv") == "".join(take(g, 0, K))


def test_cola_depends_on_seed_order(corpora, tmp_path):
    out_a, _ = run(corpora, tmp_path / "a", "k-shot", ["CoLA"], seeds=[100, 13])
    out_b, _ = run(corpora, tmp_path / "b", "k-shot", ["CoLA"], seeds=[13])
    a = read(f"{out_a}/k-shot/CoLA/{K}-13/train.tsv")
    b = read(f"{out_b}/k-shot/CoLA/{K}-13/train.tsv")
    assert a != b
    # without 1k-test the CoLA test file is the original dev, unshuffled
    assert read(f"{out_a}/k-shot/CoLA/{K}-13/test.tsv") == "".join(COLA_DEV)


def test_mnli_files(corpora, tmp_path):
    out, _ = run(corpora, tmp_path, "k-shot-1k-test", ["MNLI"])
    for seed in SEEDS:
        d = f"{out}/k-shot-1k-test/MNLI/{K}-{seed}"
        assert sorted(os.listdir(d)) == ["dev_matched.tsv", "test_matched.tsv", "test_mismatched.tsv",
                                         "train.tsv"]
        g = group(shuffled(MNLI_TRAIN, seed), last_col)
        assert list(g) == list(dict.fromkeys(last_col(x) for x in shuffled(MNLI_TRAIN, seed)))
        assert read(f"{d}/train.tsv") == MNLI_HEADER + "".join(take(g, 0, K))
        assert read(f"{d}/dev_matched.tsv") == MNLI_HEADER + "".join(take(g, K, 2 * K))
        assert read(f"{d}/test_matched.tsv") == MNLI_HEADER + "".join(MNLI_DEV_M)  # 5 lines: no cap
        assert read(f"{d}/test_mismatched.tsv") == MNLI_HEADER + "".join(shuffled(MNLI_DEV_MM, 42)[:1000])
    # and the processors read the result: 3 labels × K
    d = f"{out}/k-shot-1k-test/MNLI/{K}-13"
    assert len(get_task("mnli").read_examples(d, "train")) == 3 * K
    assert len(get_task("mnli-mm").read_examples(d, "dev")) == 3 * K
    assert len(get_task("mnli-mm").read_examples(d, "test")) == 1000
    assert get_task("mnli").read_examples(d, "test")[0].text_a == "m premise 0"


def test_stsb_groups_by_binarised_score(corpora, tmp_path):
    out, _ = run(corpora, tmp_path, "k-shot", ["STS-B"], seeds=[21])
    g = group(shuffled(STSB_TRAIN, 21), lambda line: 0 if float(last_col(line)) < 2.5 else 1)
    d = f"{out}/k-shot/STS-B/{K}-21"
    assert read(f"{d}/train.tsv") == STSB_HEADER + "".join(take(g, 0, K))
    assert read(f"{d}/dev.tsv") == STSB_HEADER + "".join(take(g, K, 2 * K))
    ex = get_task("sts-b").read_examples(d, "train")
    assert sorted(e.label < 2.5 for e in ex) == [False] * K + [True] * K


# --------------------------------------------------------------------------------------------
# CSV tasks


@pytest.mark.parametrize("mode", ["k-shot", "k-shot-1k-test"])
def test_mr_exact_rows(corpora, tmp_path, mode):
    out, _ = run(corpora, tmp_path, mode, ["mr"])
    for seed in SEEDS:
        d = f"{out}/{mode}/mr/{K}-{seed}"
        g = group(shuffled(MR_TRAIN, seed), lambda r: r[0])
        assert read(f"{d}/train.csv") == csv_text(take(g, 0, K))
        assert read(f"{d}/dev.csv") == csv_text(take(g, K, 2 * K))
        if mode == "k-shot-1k-test":
            # DataFrame.sample(n=1000, random_state=42): RandomState(42).choice, order kept
            idx = np.random.RandomState(42).choice(len(MR_TEST), size=1000, replace=False)
            assert read(f"{d}/test.csv") == csv_text([MR_TEST[i] for i in idx])
        else:
            assert read(f"{d}/test.csv") == csv_text(MR_TEST)


def test_csv_byte_level_quoting(corpora, tmp_path):
    # put the comma/quote row and the whitespace row into train for some seed, then check bytes
    out, _ = run(corpora, tmp_path, "k-shot", ["mr"], seeds=list(range(40)), k=13)
    texts = "".join(read(f"{out}/k-shot/mr/13-{s}/train.csv") for s in range(40))
    assert '1,"good, ""really"" good"\n' in texts
    assert "0,  leading and trailing  \n" in texts
    # and the task processor reads it back exactly
    for s in range(40):
        ex = get_task("mr").read_examples(f"{out}/k-shot/mr/13-{s}", "train")
        assert len(ex) == 26 and [e.label for e in ex] == [ex[0].label] * 13 + [1 - ex[0].label] * 13
        assert all(tuple(r) in {tuple(x) for x in MR_TRAIN} for r in ((e.label, e.text_a) for e in ex))


def test_trec_six_labels_first_appearance(corpora, tmp_path):
    out, _ = run(corpora, tmp_path, "k-shot", ["trec"], seeds=[87], k=2)
    sh = shuffled(TREC_TRAIN, 87)
    g = group(sh, lambda r: r[0])
    assert list(g) == list(dict.fromkeys(r[0] for r in sh))
    assert read(f"{out}/k-shot/trec/2-87/train.csv") == csv_text(take(g, 0, 2))
    assert read(f"{out}/k-shot/trec/2-87/dev.csv") == csv_text(take(g, 2, 4))


# --------------------------------------------------------------------------------------------
# plumbing


def test_missing_folder_skipped_with_one_line_and_no_tmp_files(corpora, tmp_path):
    out, logs = run(corpora, tmp_path, "k-shot", ["SST-2", "QNLI", "sst-5"], seeds=[42])
    assert [m for m in logs if m.startswith("skip")] == [
        f"skip QNLI: no folder {os.path.join(corpora, 'QNLI')}",
        f"skip sst-5: no folder {os.path.join(corpora, 'sst-5')}"]
    assert os.listdir(f"{out}/k-shot") == ["SST-2"]
    for dirpath, _, files in os.walk(out):
        assert not [f for f in files if ".tmp" in f]


def test_task_names_case_insensitive(corpora, tmp_path):
    out, _ = run(corpora, tmp_path, "k-shot", ["sst-2", "cola"], seeds=[42])
    assert sorted(os.listdir(f"{out}/k-shot")) == ["CoLA", "SST-2"]


def test_defaults_and_cli(corpora, tmp_path, capsys):
    args = gen.build_parser().parse_args([])
    assert args.seed == [100, 13, 21, 42, 87]
    assert args.task == ["SST-2", "sst-5", "mr", "cr", "mpqa", "subj", "trec", "CoLA", "MRPC", "QQP",
                         "STS-B", "MNLI", "SNLI", "QNLI", "RTE", "uci-sentiment"]
    assert (args.k, args.data_dir, args.output_dir, args.mode) == (16, "data/original", "data", "k-shot")
    out = str(tmp_path / "cli")
    assert gen.main(["--k", "2", "--task", "mr", "--seed", "13", "--data_dir", corpora,
                     "--output_dir", out, "--mode", "k-shot-1k-test"]) == 0
    assert sorted(os.listdir(f"{out}/k-shot-1k-test/mr/2-13")) == ["dev.csv", "test.csv", "train.csv"]
    assert gen.main(["--k", "0", "--data_dir", corpora, "--output_dir", out]) == 2
    assert "--k 0: must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gen.main(["--mode", "k-shot-2x"])


def test_bad_original_data(tmp_path):
    orig = str(tmp_path / "original")
    write(f"{orig}/SST-2/train.tsv", SST2_HEADER + "x\t1\n")
    with pytest.raises(UsageError) as e:
        gen.load_task(orig, "SST-2")
    assert str(e.value) == f"{orig}/SST-2/dev.tsv: file not found"
    write(f"{orig}/STS-B/train.tsv", STSB_HEADER + STSB_TRAIN[0] + "1\tg\tf\t2012\t1\ts\ts\ta\tb\thigh\n")
    write(f"{orig}/STS-B/dev.tsv", STSB_HEADER)
    with pytest.raises(UsageError) as e:
        gen.load_task(orig, "STS-B")
    assert str(e.value) == f"{orig}/STS-B/train.tsv:3: STS-B score 'high' is not a number"
    write(f"{orig}/mr/train.csv", "1,a\n0,b,c\n")
    write(f"{orig}/mr/test.csv", "1,a\n")
    with pytest.raises(UsageError) as e:
        gen.load_task(orig, "mr")
    assert str(e.value).startswith(f"{orig}/mr/train.csv: cannot read as CSV (")
    assert "line 2" in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# the committed demo data


def test_committed_uci_sentiment_matches_generator(tmp_path):
    committed = os.path.join(ROOT, "data", "k-shot-1k-test", "uci-sentiment")
    rows = pd.read_csv(os.path.join(committed, "16-42", "train.csv"), header=None)
    assert len(rows) == 32 and rows[0].value_counts().to_dict() == {0: 16, 1: 16}
    logs = []
    datasets = gen.load_datasets(os.path.join(ROOT, "data", "original"), ["uci-sentiment"], log=logs.append)
    gen.generate(datasets, 16, [100, 13, 21, 42, 87], str(tmp_path), "k-shot-1k-test", log=logs.append)
    for seed in [100, 13, 21, 42, 87]:
        for name in ["train.csv", "dev.csv", "test.csv"]:
            with open(os.path.join(committed, f"16-{seed}", name), "rb") as f:
                want = f.read()
            with open(os.path.join(tmp_path, "k-shot-1k-test", "uci-sentiment", f"16-{seed}", name), "rb") as f:
                assert f.read() == want, (seed, name)
    t = get_task("uci-sentiment")
    assert [len(t.read_examples(os.path.join(committed, "16-42"), s)) for s in ("train", "dev", "test")] == [32, 32, 1000]


SHARED = os.path.join(ROOT, "..", "shared", "data", "uci-sentiment")


@pytest.mark.skipif(not os.path.isfile(os.path.join(SHARED, "yelp.json")), reason="shared/ fixtures absent")
def test_committed_uci_original_matches_converter(tmp_path):
    from mezo.data import uci_sentiment as mk
    assert mk.main([SHARED, "--out", str(tmp_path)]) == 0
    for name in ["train.csv", "test.csv"]:
        with open(os.path.join(ROOT, "data", "original", "uci-sentiment", name), "rb") as f:
            want = f.read()
        with open(os.path.join(tmp_path, name), "rb") as f:
            assert f.read() == want, name
    train = pd.read_csv(os.path.join(tmp_path, "train.csv"), header=None)
    test = pd.read_csv(os.path.join(tmp_path, "test.csv"), header=None)
    assert (len(train), len(test)) == (2000, 1000)
    # the sources repeat a few sentences, so a handful are in both splits; nothing else overlaps
    assert len(set(train[1]) & set(test[1])) < 20
    assert not any(s != s.rstrip() for s in list(train[1]) + list(test[1]))


def test_unknown_labels_warned_but_output_unchanged(tmp_path, capsys):
    orig = str(tmp_path / "original")
    lines = [f"s{i}\t{i % 2}\n" for i in range(10)] + ["no label column\n"]
    write(f"{orig}/SST-2/train.tsv", SST2_HEADER + "".join(lines))
    write(f"{orig}/SST-2/dev.tsv", SST2_HEADER)
    out, logs = run(orig, tmp_path, "k-shot", ["SST-2"], seeds=[13], k=2)
    assert logs[0] == ("warning: SST-2: train labels not in the task's label list ['0', '1']: "
                       "'no label column' (they form their own groups, as in the original)")
    g = group(shuffled(lines, 13), lambda line: line.strip().split("\t")[-1])
    assert len(g) == 3
    assert read(f"{out}/k-shot/SST-2/2-13/train.tsv") == SST2_HEADER + "".join(take(g, 0, 2))
    # no task folder at all: exit code 2
    assert gen.main(["--data_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "none of the tasks has a folder there" in capsys.readouterr().err
