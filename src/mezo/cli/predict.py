"""Classify new text with a model saved by `run.py --save_model`.

    python tools/predict.py --model result/.../model "a gorgeous film" "a dull , lifeless mess"
    python tools/predict.py --model DIR --file sentences.txt           # one sentence per line
    python tools/predict.py --model DIR --pair "A man sleeps.<TAB>Nobody sleeps."   # RTE, MNLI, ...

Inputs are rendered with the run's own template code (mezo.data.datasets, mezo.data.templates) from the
template, label words and length limits stored in the folder's mezo_export.json. One line per
input: the predicted label (and its label word), the probability of every label, the input; for
a regression task (STS-B) the score. --json prints one JSON object per line instead.
"""
import argparse
import json
import os
import sys

from mezo.errors import UsageError


def read_inputs(sentences, file, pair: bool):
    """Texts from the command line and/or a file; with pair, each one split at its tab."""
    texts = list(sentences)
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                texts += [line.rstrip("\n").rstrip("\r") for line in f if line.strip()]
        except OSError as e:
            raise UsageError(f"--file {file}: cannot read ({e.strerror})") from None
    if not texts:
        raise UsageError("no input: give sentences as arguments or --file sentences.txt")
    if not pair:
        return texts
    pairs = []
    for i, t in enumerate(texts, 1):
        parts = t.split("\t")
        if len(parts) != 2:
            raise UsageError(f"--pair: input {i} {t[:40]!r} is not two tab-separated sentences")
        pairs.append(tuple(parts))
    return pairs


def predict(model, texts, batch_size=32):
    """[(label, {label name: probability}, logits)] for each text (label = score for regression).

    `model`: an export folder or an already loaded `mezo.models.export.Exported`."""
    from mezo.models import export
    exp = model if isinstance(model, export.Exported) else export.load(model)
    logits = export.predict_logits(exp, texts, batch_size)
    if exp.task.output_mode == "regression":
        return [(float(s), {}, s) for s in logits]
    probs = export.probabilities(logits)
    names = exp.label_names
    return [(exp.task.label_list[int(p.argmax())], dict(zip(names, map(float, p))), lg)
            for p, lg in zip(probs, logits)]


def format_line(label, probs, text, pair) -> str:
    shown = "\t".join(text) if pair else text
    if not probs:
        return f"{label:.4f}\t{shown}"
    best = max(probs, key=probs.get)
    return f"{best}\t" + " ".join(f"{k}={v:.4f}" for k, v in probs.items()) + f"\t{shown}"


def main(argv=None, out=None) -> int:
    out = out or sys.stdout
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sentences", nargs="*", help="texts to classify (with --pair: 'first<TAB>second')")
    p.add_argument("--model", required=True, help="folder written by run.py --save_model (<output_dir>/model)")
    p.add_argument("--file", help="a text file, one input per line")
    p.add_argument("--pair", action="store_true", help="two-sentence task: inputs are tab-separated pairs")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    a = p.parse_args(argv)
    try:
        from mezo.models import export
        meta = export.read_meta(a.model)
        if meta["pair"] != a.pair:
            raise UsageError(f"--pair: the model was trained on {'sentence pairs' if meta['pair'] else 'single sentences'} "
                             f"(task {meta['task']}); " + ("pass --pair with tab-separated pairs" if meta["pair"]
                                                           else "drop --pair"))
        if a.batch_size < 1:
            raise UsageError(f"--batch_size {a.batch_size}: must be >= 1")
        texts = read_inputs(a.sentences, a.file, a.pair)
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        results = predict(a.model, texts, a.batch_size)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for text, (label, probs, _) in zip(texts, results):
        if a.json:
            print(json.dumps({"input": text, "label": label, "probabilities": probs}), file=out)
        else:
            print(format_line(label, probs, text, a.pair), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
