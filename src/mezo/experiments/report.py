r"""Our results next to the paper's: a Markdown table, a bar chart, and per-run training curves.

    python tools/report.py                                   # table from ./log, printed
    python tools/report.py --log /tmp/grid_log --out report.md --png report.png
    python tools/report.py --log /tmp/grid_log --curve result/uci-sentiment-...-prompt-standard-k16-.../16-42
    python tools/report.py --log /tmp/grid_log --curve "tag=k16-splade-tiny-mezo-ft seed=42 learning_rate=1e-3" \
        --curve_png curve.png

Table: one row per (K, model, method, task) found in the log: the mean (std) over seeds of the
test accuracy (x100; population std as in gather_result), where for each seed the grid point
with the best dev accuracy is taken — the selection is tools/gather_result.py's `gather()`
itself, not a copy. Next to it the paper's RoBERTa-large number (docs/behaviour.md, "Paper grids
and results": Table 18 for K=16 and K=512, zero-shot the same for both; Table 3's
non-differentiable MeZO row at K=512) and the difference ours - paper. The method is read from
the tag that the scripts and tools/grid.py build, `k<K>-<model>-<suffix>`:
    mezo-ft -> mezo, mezo-lora, mezo-prefix, mezo-adam, mezo-nondiff, ft, lora -> ft-lora,
    prefix -> ft-prefix, zero-shot, lp
(an unknown suffix is reported under its own name without a paper number). `uci-sentiment` is
the project's demo task; it is compared with the paper's SST-2 number (marked `SST-2*`), which
is a different dataset and a different model: a sanity reference, not a reproduction target.
Turn that off with --no_proxy. --details also prints gather()'s own per-seed report (which grid
point won on dev for each seed, and its hyperparameters).

--png draws ours (with the std over seeds as error bar) and the paper's number side by side for
every row of the table. --curve picks one record, by its output_dir (exact, else a unique
substring) or by `field=value` pairs (numbers compared as numbers; the last matching record
wins when several match), and plots its dev accuracy and training loss over the steps (the
record's `dev_curve` and `train_loss_curve`).
"""
import argparse
import io
import math
import os
import re
import sys

import numpy as np


from mezo.experiments.catalog import METHOD_NAMES, TAG_SUFFIXES
from mezo.errors import UsageError
from mezo.experiments.results import read_records
from mezo.experiments.gather import derive_keys, gather

PAPER_TASKS = ("sst-2", "sst-5", "snli", "mnli", "rte", "trec")
PAPER_TASK_NAMES = {"sst-2": "SST-2", "sst-5": "SST-5", "snli": "SNLI", "mnli": "MNLI", "rte": "RTE",
                    "trec": "TREC"}


def _row(text):
    return dict(zip(PAPER_TASKS, (float(x) for x in text.split("/"))))


# The paper's Table 18 (RoBERTa-large, mean test accuracy over 5 seeds); Table 3 for nondiff.
PAPER = {
    16: {"zero-shot": _row("79.0 / 35.5 / 50.2 / 48.8 / 51.4 / 32.0"),
         "lp": _row("76.0 / 40.3 / 66.0 / 56.5 / 59.4 / 51.3"),
         "mezo": _row("90.5 / 45.5 / 68.5 / 58.7 / 64.0 / 76.9"),
         "mezo-lora": _row("91.4 / 43.0 / 69.7 / 64.0 / 64.9 / 73.1"),
         "mezo-prefix": _row("90.8 / 45.8 / 71.6 / 63.4 / 65.4 / 80.3"),
         "mezo-adam": _row("90.4 / 45.4 / 74.1 / 64.3 / 59.2 / 78.3"),
         "ft": _row("91.9 / 47.5 / 77.5 / 70.0 / 66.4 / 85.0"),
         "ft-lora": _row("91.4 / 46.7 / 74.9 / 67.7 / 66.1 / 82.7"),
         "ft-prefix": _row("91.9 / 47.7 / 77.2 / 66.5 / 66.6 / 85.7")},
    512: {"zero-shot": _row("79.0 / 35.5 / 50.2 / 48.8 / 51.4 / 32.0"),
          "lp": _row("91.3 / 51.7 / 80.9 / 71.5 / 73.1 / 89.4"),
          "mezo": _row("93.3 / 53.2 / 83.0 / 78.3 / 78.6 / 94.3"),
          "mezo-lora": _row("93.4 / 52.4 / 84.0 / 77.9 / 77.6 / 95.0"),
          "mezo-prefix": _row("93.3 / 53.6 / 84.8 / 79.8 / 77.2 / 94.4"),
          "mezo-adam": _row("93.3 / 53.9 / 85.3 / 79.6 / 79.2 / 95.1"),
          "ft": _row("93.9 / 55.9 / 88.7 / 84.4 / 82.7 / 97.3"),
          "ft-lora": _row("94.2 / 55.3 / 88.3 / 83.9 / 83.2 / 97.0"),
          "ft-prefix": _row("93.7 / 54.6 / 88.3 / 83.3 / 82.5 / 97.4"),
          "mezo-nondiff": {"sst-2": 92.7, "sst-5": 48.9, "snli": 82.7, "trec": 68.6}},
}
METHOD_ORDER = ("zero-shot", "lp") + tuple(m for m in METHOD_NAMES if m not in ("zero-shot", "lp"))
TASK_ORDER = PAPER_TASKS + ("uci-sentiment",)
PROXY = {"uci-sentiment": "sst-2"}  # demo task -> paper task whose number is shown as a reference


def parse_tag(tag):
    """`k16-roberta-large-mezo-ft` -> (16, 'roberta-large', 'mezo'); unknown suffix -> (k, model, suffix)."""
    m = re.match(r"^k(\d+)-(.+)$", str(tag))
    if not m:
        return None, "", str(tag)
    k, rest = int(m.group(1)), m.group(2)
    for suffix in sorted(TAG_SUFFIXES, key=len, reverse=True):  # longest first: mezo-lora before lora
        if rest.endswith("-" + suffix):
            return k, rest[: -len(suffix) - 1], TAG_SUFFIXES[suffix]
    model, _, suffix = rest.rpartition("-")
    return k, model, suffix or rest


def paper_number(method, task, k, proxy=True):
    """(paper value, label of the paper task) or (None, None)."""
    ptask = task if task in PAPER_TASKS else (PROXY.get(task) if proxy else None)
    if ptask is None:
        return None, None
    value = PAPER.get(k, {}).get(method, {}).get(ptask)
    if value is None:
        return None, None
    label = PAPER_TASK_NAMES[ptask] + ("" if ptask == task else "*")
    return value, label


def collect(records, proxy=True):
    """One row per (K, model, method, task): best-dev run per seed via gather(), then mean/std x100."""
    cells = sorted({(str(r["task_name"]), str(r["tag"]), int(r.get("num_k") or 0))
                    for r in records if r.get("task_name") and r.get("tag") is not None})
    rows, skipped = [], []
    for task, tag, k in cells:
        try:
            key, test_key, _ = derive_keys({"task_name": task})
        except UsageError as e:
            skipped.append(f"{task} ({e})")
            continue
        buf = io.StringIO()
        chosen = gather(records, {"task_name": task, "tag": tag, "num_k": k}, key, test_key, out=buf)
        best = chosen.get((tag, k))
        if not best:
            continue
        tests = np.array([float(b[test_key]) for b in best]) * 100
        _, model, method = parse_tag(tag)
        paper, ptask = paper_number(method, task, k, proxy)
        n_runs = sum(1 for r in records if r.get("task_name") == task and r.get("tag") == tag
                     and int(r.get("num_k") or 0) == k and key in r and test_key in r)
        rows.append(dict(k=k, model=model, method=method, task=task, tag=tag, seeds=len(tests), runs=n_runs,
                         mean=float(tests.mean()), std=float(tests.std()), paper=paper, paper_task=ptask,
                         diff=None if paper is None else round(round(float(tests.mean()), 1) - paper, 1),
                         per_seed={str(b.get("seed")): float(b[test_key]) * 100 for b in best},
                         details=f"{task}: " + buf.getvalue()))

    def order(r):
        mi = METHOD_ORDER.index(r["method"]) if r["method"] in METHOD_ORDER else len(METHOD_ORDER)
        ti = TASK_ORDER.index(r["task"]) if r["task"] in TASK_ORDER else len(TASK_ORDER)
        return (r["k"], r["model"], mi, r["method"], ti, r["task"])
    return sorted(rows, key=order), skipped


def markdown(rows, log_name="log"):
    if not rows:
        return f"No finished runs with dev and test accuracy in {log_name}.\n"
    out = [f"Test accuracy (%), mean (std) over seeds; per seed the grid point with the best dev accuracy "
           f"(tools/gather_result.py). Paper: RoBERTa-large (MeZO paper Table 18 / Table 3). Log: {log_name}", ""]
    out.append("| K | model | method | task | seeds | runs | ours | paper | ours − paper |")
    out.append("|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        paper = "–" if r["paper"] is None else f"{r['paper']:.1f}" + (
            f" ({r['paper_task']})" if r["paper_task"] and r["paper_task"].endswith("*") else "")
        diff = "–" if r["diff"] is None else f"{r['diff']:+.1f}"
        seeds = f"{r['seeds']}" + ("" if r["seeds"] >= 5 else " (!)")
        out.append(f"| {r['k']} | {r['model']} | {r['method']} | {r['task']} | {seeds} | {r['runs']} | "
                   f"{r['mean']:.1f} ({r['std']:.1f}) | {paper} | {diff} |")
    notes = []
    if any(r["paper_task"] and r["paper_task"].endswith("*") for r in rows):
        notes.append("\\* uci-sentiment is the project's demo task; the paper column shows SST-2 "
                     "(another dataset, RoBERTa-large) only as a reference point.")
    if any(r["seeds"] < 5 for r in rows):
        notes.append("(!) fewer than the paper's 5 seeds.")
    if any(r["model"] != "roberta-large" for r in rows):
        notes.append("Rows with another model than roberta-large are not comparable with the paper's numbers.")
    return "\n".join(out + ([""] + notes if notes else [])) + "\n"


def _agg():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def bar_chart(rows, path):
    plt = _agg()
    groups = sorted({(r["k"], r["model"]) for r in rows})
    n = max(1, len(groups))
    width = max(6.0, 1.1 * max([sum(1 for r in rows if (r["k"], r["model"]) == g) for g in groups] or [1]) + 2)
    fig, axes = plt.subplots(n, 1, figsize=(width, 4.2 * n), squeeze=False)
    if not rows:
        axes[0][0].text(0.5, 0.5, "no results", ha="center", va="center")
        axes[0][0].axis("off")
    for ax, (k, model) in zip(axes[:, 0], groups):
        sub = [r for r in rows if (r["k"], r["model"]) == (k, model)]
        x = np.arange(len(sub))
        ours = [r["mean"] for r in sub]
        bars = ax.bar(x - 0.2, ours, 0.4, yerr=[r["std"] for r in sub], capsize=3, color="tab:blue",
                      label=f"ours ({model}), mean ± std over seeds")
        paper = [r["paper"] if r["paper"] is not None else np.nan for r in sub]
        pbars = ax.bar(x + 0.2, paper, 0.4, color="tab:gray", hatch="//", edgecolor="black", linewidth=0.5,
                       label="paper (RoBERTa-large)")
        for b, v, r in zip(bars, ours, sub):  # label above the error bar
            ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v + r["std"]), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
        for b, v in zip(pbars, paper):
            ax.annotate("n/a" if np.isnan(v) else f"{v:.1f}", (b.get_x() + b.get_width() / 2, 0 if np.isnan(v) else v),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.set_xlim(-0.6, max(len(sub), 4) - 0.4)  # keep bars narrow when a panel has few rows
        ax.set_xticks(x)
        ax.set_xticklabels([f"{r['method']}\n{r['task']}" + (f"\n(vs {r['paper_task']})" if r["paper_task"]
                                                              and r["paper_task"].endswith("*") else "")
                            for r in sub], fontsize=8)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 119)
        ax.set_title(f"K={k}, model {model}: ours vs paper")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _num(text):
    try:
        return float(text)
    except ValueError:
        return None


def select_record(records, selector):
    """(record, number of matches) for an output_dir or `field=value ...` selector."""
    selector = selector.strip()
    if "=" in selector and not selector.startswith(("result/", "/", ".")):
        conds = []
        for part in re.split(r"[\s,]+", selector):
            if not part:
                continue
            if "=" not in part:
                raise ValueError(f"--curve: {part!r} is not field=value")
            f, v = part.split("=", 1)
            conds.append((f, v))

        def ok(r):
            for f, v in conds:
                got = r.get(f)
                if got is None:
                    return False
                x = _num(v)
                if x is not None and isinstance(got, (int, float)) and not isinstance(got, bool):
                    if not math.isclose(float(got), x, rel_tol=1e-9):
                        return False
                elif str(got) != v and str(got).lower() != v.lower():
                    return False
            return True
        hits = [r for r in records if ok(r)]
    else:
        norm = os.path.normpath(selector)
        hits = [r for r in records if os.path.normpath(str(r.get("output_dir", ""))) == norm]
        if not hits:
            hits = [r for r in records if selector in str(r.get("output_dir", ""))]
            if len({r.get("output_dir") for r in hits}) > 1:
                dirs = sorted({str(r.get("output_dir")) for r in hits})
                raise ValueError(f"--curve: {selector!r} matches {len(dirs)} output_dirs, e.g. {dirs[:3]}")
    if not hits:
        raise ValueError(f"--curve: no record matches {selector!r}")
    return hits[-1], len(hits)


def curve_plot(record, path):
    dev = record.get("dev_curve") or []
    loss = record.get("train_loss_curve") or []
    if not dev and not loss:
        raise ValueError("--curve: the record has no dev_curve / train_loss_curve (a zero-shot or linear-probe "
                         "run, or a record from a run.py without curves)")
    plt = _agg()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True)
    if dev:
        s, v = zip(*[(float(p[0]), float(p[1]) * 100) for p in dev])
        a1.plot(s, v, "o-", color="tab:blue", label="dev accuracy")
        best = record.get("best_dev_step")
        if best is not None and best in [int(x) for x in s]:
            bv = v[[int(x) for x in s].index(best)]
            a1.plot([best], [bv], "*", color="tab:red", markersize=14, label=f"best (step {best}): {bv:.1f}")
        a1.legend(fontsize=8)
    else:
        a1.text(0.5, 0.5, "no dev evaluations", ha="center", va="center", transform=a1.transAxes)
    a1.set_ylabel("dev accuracy (%)")
    a1.grid(alpha=0.3)
    if loss:
        s, v = zip(*[(float(p[0]), float(p[1])) for p in loss])
        a2.plot(s, v, "-", color="tab:orange", label="training loss (logged)")
        a2.legend(fontsize=8)
    else:
        a2.text(0.5, 0.5, "no training loss", ha="center", va="center", transform=a2.transAxes)
    a2.set_xlabel("step")
    a2.set_ylabel("training loss")
    a2.grid(alpha=0.3)
    task = record.get("task_name", "?")
    acc = record.get(f"{task}_test_eval_acc")
    hp = ", ".join(f"{n}={record.get(f)}" for n, f in (("bs", "per_device_train_batch_size"),
                                                     ("lr", "learning_rate"), ("eps", "zero_order_eps"))
                   if record.get(f) is not None)
    fig.suptitle(f"{record.get('tag')} · {task} · seed {record.get('seed')}\n{hp}"
                 + (f" · test acc {float(acc) * 100:.1f}" if acc is not None else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None, out=sys.stdout):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", default="log", help="result log (one JSON record per run)")
    p.add_argument("--out", default=None, help="also write the Markdown table here (e.g. report.md)")
    p.add_argument("--png", default=None, help="bar chart ours vs paper (e.g. report.png)")
    p.add_argument("--curve", default=None, help="output_dir of a run, or 'field=value ...' selecting a record")
    p.add_argument("--curve_png", default="curve.png", help="where --curve writes its plot (default curve.png)")
    p.add_argument("--details", action="store_true", help="also print gather_result's per-seed selection")
    p.add_argument("--no_proxy", action="store_true", help="do not compare uci-sentiment with the paper's SST-2")
    a = p.parse_args(argv)
    if not os.path.isfile(a.log):
        print(f"error: --log {a.log}: no such file", file=sys.stderr)
        return 2
    records = read_records(a.log)
    if a.curve:
        try:
            rec, n = select_record(records, a.curve)
            curve_plot(rec, a.curve_png)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        more = f" (last of {n} matching records)" if n > 1 else ""
        print(f"curve of {rec.get('output_dir')}{more} -> {a.curve_png}", file=out)
        if not (a.out or a.png):
            return 0
    rows, skipped = collect(records, proxy=not a.no_proxy)
    for s in skipped:
        print(f"warning: skipped task {s}", file=sys.stderr)
    text = markdown(rows, a.log)
    if a.details:
        print("".join(r["details"] for r in rows), file=out)
    print(text, file=out, end="")
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        print(f"table -> {a.out}", file=out)
    if a.png:
        bar_chart(rows, a.png)
        print(f"bar chart -> {a.png}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
