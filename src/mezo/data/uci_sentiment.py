"""Build the demo task's "original" folder from the UCI Sentiment Labelled Sentences.

    python tools/make_uci_sentiment.py                      # reads ../shared/data/uci-sentiment
    python tools/make_uci_sentiment.py /path/to/uci-sentiment --out data/original/uci-sentiment

Input: amazon.json, imdb.json, yelp.json — JSON lists of {"text": str, "class": 0 | 1}
(Kotzias et al., KDD 2015; UCI ML Repository, CC BY 4.0; as shipped in the test fixtures of
the npm package `sentiment` 5.0.2). Each file ends with one empty record
{"text": "", "class": null}, which is dropped; trailing whitespace of the texts is stripped.

Output, in the LM-BFF layout of the sentence tasks (like mr: headerless `label,sentence` CSV
rows, written with pandas `to_csv(header=False, index=False)`):
- test.csv: 1,000 sentences held out with `np.random.RandomState(0).permutation` over the
  3,000 sentences in file order (amazon, imdb, yelp); rows in permutation order;
- train.csv: the other 2,000, in permutation order — the pool the k-shot splits come from.
Then: python tools/generate_k_shot_data.py --mode k-shot-1k-test --k 16 --task uci-sentiment
"""
import argparse
import json
import os
import sys

import numpy as np
import pandas as pd


from mezo.errors import UsageError

from mezo.paths import REPO_ROOT as ROOT
SOURCES = ["amazon", "imdb", "yelp"]
TEST_SIZE = 1000
SPLIT_SEED = 0


def load_records(src_dir: str):
    """[(label, text)] over the three files in SOURCES order, empty records dropped."""
    rows = []
    for name in SOURCES:
        path = os.path.join(src_dir, f"{name}.json")
        if not os.path.isfile(path):
            raise UsageError(f"{path}: file not found")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"{path}: not a JSON file ({' '.join(str(e).split())})") from None
        if not isinstance(data, list):
            raise UsageError(f"{path}: expected a JSON list of {{\"text\", \"class\"}} records")
        for i, rec in enumerate(data):
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise UsageError(f"{path}: record {i}: expected {{\"text\": str, \"class\": 0|1}}")
            text = rec["text"].rstrip()
            label = rec.get("class")
            if text == "" and label is None:
                continue  # the empty end-of-file record
            if label not in (0, 1) or isinstance(label, bool):
                raise UsageError(f"{path}: record {i}: class {label!r} is not 0 or 1")
            if text == "":
                raise UsageError(f"{path}: record {i}: empty text")
            rows.append((int(label), text))
    return rows


def split_rows(rows, test_size: int = TEST_SIZE, seed: int = SPLIT_SEED):
    perm = np.random.RandomState(seed).permutation(len(rows))
    test = [rows[i] for i in perm[:test_size]]
    train = [rows[i] for i in perm[test_size:]]
    return train, test


def write_csv(path: str, rows) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    pd.DataFrame([list(r) for r in rows]).to_csv(tmp, header=False, index=False, lineterminator="\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", nargs="?", default=os.path.join(ROOT, "..", "shared", "data", "uci-sentiment"),
                   help="folder with amazon.json, imdb.json, yelp.json (default: ../shared/data/"
                        "uci-sentiment relative to the repository root)")
    p.add_argument("--out", default=os.path.join(ROOT, "data", "original", "uci-sentiment"),
                   help="output folder (default: data/original/uci-sentiment)")
    args = p.parse_args(argv)
    try:
        rows = load_records(args.src)
        if len(rows) <= TEST_SIZE:
            raise UsageError(f"{args.src}: only {len(rows)} sentences; need more than {TEST_SIZE}")
        train, test = split_rows(rows)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "train.csv"), train)
    write_csv(os.path.join(args.out, "test.csv"), test)
    for name, part in (("train", train), ("test", test)):
        n1 = sum(lab for lab, _ in part)
        print(f"{os.path.join(args.out, name + '.csv')}: {len(part)} rows ({len(part) - n1} negative, {n1} positive)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
