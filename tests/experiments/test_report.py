"""tools/report.py on a synthetic log: table values computed by hand, PNGs written."""
import io

import pytest

from mezo.experiments import results
from mezo.experiments import report


def rec(task, tag, seed, lr, dev, test, k=16, **extra):
    return {"time": "t", "output_dir": f"result/{task}-{tag}-lr{lr}/{k}-{seed}",
            f"{task}_dev_eval_acc": dev, f"{task}_test_eval_acc": test, f"{task}_test_eval_loss": 0.5,
            "task_name": task, "tag": tag, "num_k": k, "seed": seed,
            "data_dir": f"data/k-shot-1k-test/{task.upper()}/{k}-{seed}", "learning_rate": lr, **extra}


@pytest.fixture
def log(tmp_path):
    path = str(tmp_path / "log")
    # MeZO on SST-2, two grid points per seed; the better dev one is (seed: test acc):
    #   13: lr 1e-6 (dev .80) -> .90;  21: lr 1e-5 (dev .85) -> .80;  42: lr 1e-6 -> .85
    #   87: lr 1e-5 -> .95;  100: tie on dev .70 -> smallest output_dir (lr 1e-5 < lr 1e-6) -> .75
    # mean (.90 + .80 + .85 + .95 + .75) / 5 = .85 -> 85.0; population std = sqrt(.005) = 7.07 -> 7.1
    # paper MeZO K=16 SST-2 = 90.5 -> diff -5.5
    grid_points = {13: [(1e-6, .80, .90), (1e-5, .60, .99)], 21: [(1e-6, .50, .99), (1e-5, .85, .80)],
                   42: [(1e-6, .90, .85), (1e-5, .10, .10)], 87: [(1e-6, .20, .99), (1e-5, .30, .95)],
                   100: [(1e-6, .70, .65), (1e-5, .70, .75)]}
    tag = "k16-roberta-large-mezo-ft"
    for seed, points in grid_points.items():
        for lr, dev, test in points:
            results.append_record(path, rec("sst-2", tag, seed, lr, dev, test,
                                            dev_curve=[[10, dev - .1], [20, dev]], best_dev_step=20,
                                            train_loss_curve=[[10, .7], [20, .6], [30, .5]]))
    # FT on trec at K=512, three seeds, one point each: .80 .90 .85 -> 85.0 (4.1); paper 97.3 -> -12.3
    for seed, t in ((13, .80), (21, .90), (42, .85)):
        results.append_record(path, rec("trec", "k512-roberta-large-ft", seed, 1e-5, .5, t, k=512))
    # zero-shot on the demo task with a tiny model: .60 .70 -> 65.0 (5.0), vs SST-2's 79.0 -> -14.0
    for seed, t in ((13, .60), (42, .70)):
        results.append_record(path, rec("uci-sentiment", "k16-splade-tiny-zero-shot", seed, 1e-5, .5, t))
    # an unknown tag and a record without test metric
    results.append_record(path, rec("rte", "k16-roberta-large-mystery", 13, 1e-5, .5, .55))
    bad = rec("rte", "k16-roberta-large-ft", 13, 1e-5, .5, .5)
    del bad["rte_test_eval_acc"]
    results.append_record(path, bad)
    return path


def test_parse_tag():
    assert report.parse_tag("k16-roberta-large-mezo-ft") == (16, "roberta-large", "mezo")
    assert report.parse_tag("k512-roberta-large-lora") == (512, "roberta-large", "ft-lora")
    assert report.parse_tag("k16-roberta-large-mezo-lora") == (16, "roberta-large", "mezo-lora")
    assert report.parse_tag("k16-splade-tiny-zero-shot") == (16, "splade-tiny", "zero-shot")
    assert report.parse_tag("k16-roberta-large-prefix") == (16, "roberta-large", "ft-prefix")
    assert report.parse_tag("k16-roberta-large-mystery") == (16, "roberta-large", "mystery")
    assert report.parse_tag("free form")[2] == "free form"


def test_table_values(log):
    rows, _ = report.collect(results.read_records(log))
    by = {(r["method"], r["task"], r["k"]): r for r in rows}
    m = by[("mezo", "sst-2", 16)]
    assert (m["seeds"], m["runs"]) == (5, 10)
    assert m["mean"] == pytest.approx(85.0) and m["std"] == pytest.approx(0.005 ** 0.5 * 100)
    assert m["paper"] == 90.5 and m["diff"] == pytest.approx(-5.5)
    assert m["per_seed"] == pytest.approx({"13": 90, "21": 80, "42": 85, "87": 95, "100": 75})
    f = by[("ft", "trec", 512)]
    assert f["mean"] == pytest.approx(85.0) and f["paper"] == 97.3 and f["diff"] == pytest.approx(-12.3)
    z = by[("zero-shot", "uci-sentiment", 16)]
    assert (z["mean"], z["std"], z["paper"], z["paper_task"]) == (pytest.approx(65.0), pytest.approx(5.0), 79.0, "SST-2*")
    assert by[("mystery", "rte", 16)]["paper"] is None
    assert ("ft", "rte", 16) not in by  # no test metric
    noproxy = {(r["method"], r["task"]): r for r in report.collect(results.read_records(log), proxy=False)[0]}
    assert noproxy[("zero-shot", "uci-sentiment")]["paper"] is None


def test_markdown_and_pngs(log, tmp_path):
    out_md, png, curve = tmp_path / "r.md", tmp_path / "r.png", tmp_path / "c.png"
    buf = io.StringIO()
    assert report.main(["--log", log, "--out", str(out_md), "--png", str(png)], out=buf) == 0
    text = out_md.read_text()
    assert "| 16 | roberta-large | mezo | sst-2 | 5 | 10 | 85.0 (7.1) | 90.5 | -5.5 |" in text
    assert "| 512 | roberta-large | ft | trec | 3 (!) | 3 | 85.0 (4.1) | 97.3 | -12.3 |" in text
    assert "| 16 | splade-tiny | zero-shot | uci-sentiment | 2 (!) | 2 | 65.0 (5.0) | 79.0 (SST-2*) | -14.0 |" in text
    assert "| 16 | roberta-large | mystery | rte | 1 (!) | 1 | 55.0 (0.0) | – | – |" in text
    assert text in buf.getvalue()
    # Rows ordered by K, model, then the paper's method order.
    lines = [l for l in text.splitlines() if l.startswith("| 16 |") or l.startswith("| 512 |")]
    assert [l.split(" | ")[2] for l in lines] == ["mezo", "mystery", "zero-shot", "ft"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000

    buf = io.StringIO()
    assert report.main(["--log", log, "--curve", "tag=k16-roberta-large-mezo-ft seed=21 learning_rate=0.00001",
                        "--curve_png", str(curve)], out=buf) == 0
    assert "result/sst-2-k16-roberta-large-mezo-ft-lr1e-05/16-21" in buf.getvalue()
    assert curve.read_bytes()[:4] == b"\x89PNG" and curve.stat().st_size > 5000


def test_curve_selection(log):
    records = results.read_records(log)
    r, n = report.select_record(records, "result/sst-2-k16-roberta-large-mezo-ft-lr1e-06/16-42")
    assert (r["seed"], r["learning_rate"], n) == (42, 1e-6, 1)
    r, n = report.select_record(records, "lr1e-06/16-87")  # unique substring
    assert r["seed"] == 87
    with pytest.raises(ValueError):
        report.select_record(records, "lr1e-06")  # several output_dirs
    with pytest.raises(ValueError):
        report.select_record(records, "seed=5")
    r, n = report.select_record(records, "tag=k16-roberta-large-mezo-ft,seed=13")
    assert n == 2 and r["learning_rate"] == 1e-5  # the last matching record
    zs, _ = report.select_record(records, "tag=k16-splade-tiny-zero-shot seed=13")
    with pytest.raises(ValueError, match="no dev_curve"):
        report.curve_plot(zs, "/nonexistent/x.png")


def test_empty_and_missing_log(tmp_path, capsys):
    assert report.main(["--log", str(tmp_path / "nope")]) == 2
    empty = tmp_path / "empty"
    empty.write_text("")
    buf = io.StringIO()
    png = tmp_path / "e.png"
    assert report.main(["--log", str(empty), "--png", str(png)], out=buf) == 0
    assert "No finished runs" in buf.getvalue() and png.stat().st_size > 0
