"""Few-shot datasets (with optional demonstrations), collation and logit averaging (docs/behaviour.md, "Demonstrations").

Demonstration RNG: ``seed=None`` (the default, and what run.py should pass for fidelity) draws
the demo permutations from NumPy's *global legacy* RNG, exactly like the reference (run.py seeds
it with ``--seed`` before building the datasets and again before training, so dev/test demos are
drawn at construction in build order and train demos on every access).  An int ``seed`` gives
the dataset its own ``np.random.RandomState(seed)`` instead, isolated from any other consumer
(same stream as the global RNG freshly seeded with that value).

Items are plain dicts ``{input_ids, attention_mask, [token_type_ids], [mask_pos], [label]}``
(lists of ints; ``mask_pos`` an int; ``label`` an int class id or a float for regression;
absent when the example has no label).
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, RandomSampler

from mezo.errors import UsageError
from mezo.data.prompt import PromptSpec
from mezo.data.templates import render, render_finetune, validate_template

SPLITS = ("train", "dev", "test")


def example_sentences(example) -> list[str]:
    """The query sentences of an example: [text_a] or [text_a, text_b]; missing/NaN -> ''."""
    def clean(t):
        if t is None or (isinstance(t, float) and math.isnan(t)):
            return ""
        return str(t)
    if example.text_b is None:
        return [clean(example.text_a)]
    return [clean(example.text_a), clean(example.text_b)]


def _get_task(task):
    if isinstance(task, str):
        from mezo.data.tasks import get_task
        return get_task(task)
    return task


def _embedding_split_name(task_name: str, split: str) -> str:
    if split == "train":
        return "train"
    if task_name == "mnli":
        return f"{split}_matched"
    if task_name == "mnli-mm":
        return f"{split}_mismatched"
    return split


class FewShotDataset(Dataset):
    """Queries x ``num_sample`` items, rendered as ``spec`` says.  See ``build_dataset`` for the arguments."""

    def __init__(self, split, examples, support_examples, tokenizer, *, task, spec: PromptSpec,
                 data_dir=None, seed=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.spec = spec
        self.task = _get_task(task)
        self.tokenizer = tokenizer
        self.queries = list(examples)
        self.supports = list(self.queries if support_examples is None and split == "train"
                             else (support_examples or []))
        self.template = spec.rendered_template
        self.label_word_ids = None if spec.label_word_ids is None else list(spec.label_word_ids)
        self.prompt = spec.prompt
        self.demo = spec.demo
        self.regression = self.task.output_mode == "regression"
        self.max_length = spec.max_length
        self.truncate_head = bool(spec.truncate_head) and self.demo  # only honoured with demos
        num_sample = spec.num_sample
        self.rng = (np.random if seed is None else seed if isinstance(seed, np.random.RandomState)
                    else np.random.RandomState(seed))
        self._encode_cache: dict = {}  # text -> token ids, shared by this dataset's renders
        if self.prompt:
            validate_template(self.template, prompt=True)

        if split == "train" or not self.demo:
            self.num_sample = 1
        else:
            if int(num_sample) < 1:
                raise UsageError(f"--num_sample {num_sample}: must be >= 1")
            self.num_sample = int(num_sample)
        self.num_queries = len(self.queries)

        if self.demo:
            if not self.supports:
                raise UsageError(f"demonstrations for the {split} split need training examples")
            self.num_buckets = 2 if self.regression else self.task.num_labels
            self.support_buckets = [self._bucket(ex) for ex in self.supports]
            self._all = list(range(len(self.supports)))
            self.candidates = None  # per-query candidate lists (only with --demo_filter)
            if spec.demo_filter:
                self.candidates = self._filtered_candidates(spec.demo_filter_rate, spec.demo_filter_model,
                                                            data_dir)

        self.features = None
        if split != "train" or not self.demo:
            # sample-major order: all queries for sample 0, then sample 1, ...
            self.features = [self._make(q) for _ in range(self.num_sample)
                             for q in range(self.num_queries)]

    # --------------------------------------------------------------------------- helpers
    def _bucket(self, example) -> int:
        if self.regression:
            return 0 if float(example.label) <= self.task.median else 1
        return self.task.label_id(example.label)

    def _candidate_indices(self, q: int) -> list[int]:
        if self.candidates is not None:
            return self.candidates[q]
        if self.split == "train":
            return [j for j in self._all if j != q]
        return self._all

    def _filtered_candidates(self, rate, model, data_dir) -> list[list[int]]:
        if not model:
            raise UsageError("--demo_filter: needs --demo_filter_model (embedding file suffix)")
        if data_dir is None:
            raise UsageError("--demo_filter: needs --data_dir holding the embedding files")
        name = _embedding_split_name(self.task.name, self.split)
        paths = [os.path.join(data_dir, f"train_{model}.npy"),
                 os.path.join(data_dir, f"{name}_{model}.npy")]
        embs = []
        for path, n in zip(paths, (len(self.supports), len(self.queries))):
            if not os.path.isfile(path):
                raise UsageError(f"--demo_filter_model {model}: missing embedding file {path}")
            e = np.load(path, allow_pickle=False)
            if e.ndim != 2 or e.shape[0] != n:
                raise UsageError(f"--demo_filter_model {model}: {path} has shape {e.shape}, "
                                 f"expected ({n}, dim)")
            embs.append(e.astype(np.float64))
        sup, qry = embs
        sup = sup / np.maximum(np.linalg.norm(sup, axis=1, keepdims=True), 1e-8)
        qry = qry / np.maximum(np.linalg.norm(qry, axis=1, keepdims=True), 1e-8)
        out = []
        for q in range(len(self.queries)):
            cand = [j for j in range(len(self.supports)) if j != q or self.split != "train"]
            scores = sup[cand] @ qry[q]
            order = np.argsort(-scores, kind="stable")
            limit = int(len(cand) // self.num_buckets * rate)
            counts = [0] * self.num_buckets
            kept = []
            for k in order:
                j = cand[k]
                b = self.support_buckets[j]
                if counts[b] < limit:
                    counts[b] += 1
                    kept.append(j)
            out.append(kept)
        return out

    def select_demos(self, q: int) -> list[int]:
        """One support index per label (bucket), by scanning a random permutation."""
        cand = self._candidate_indices(q)
        order = self.rng.permutation(len(cand))
        chosen: dict[int, int] = {}
        for k in order:
            j = cand[k]
            b = self.support_buckets[j]
            if b not in chosen:
                chosen[b] = j
                if len(chosen) == self.num_buckets:
                    break
        if len(chosen) < self.num_buckets:
            missing = [b for b in range(self.num_buckets) if b not in chosen]
            raise UsageError(f"demonstrations: no candidate training example for label id(s) "
                             f"{missing} for {self.split} example "
                             f"{self.queries[q].guid!r} (need >= 1 per label, >= 2 in train)")
        return [chosen[b] for b in range(self.num_buckets)]

    def sentences_for(self, q: int) -> list[str]:
        """Query sentences, then (with demos) the sampled demos' sentences in label order.
        Draws fresh demos from the RNG on every call."""
        sentences = example_sentences(self.queries[q])
        if self.demo:
            for j in self.select_demos(q):
                sentences += example_sentences(self.supports[j])
        return sentences

    def _make(self, q: int) -> dict:
        ex = self.queries[q]
        sentences = self.sentences_for(q)
        if self.prompt:
            item = render(self.template, sentences, self.tokenizer, self.label_word_ids,
                          self.max_length, self.spec.first_sent_limit, self.spec.other_sent_limit,
                          self.truncate_head, guid=ex.guid, cache=self._encode_cache)
        else:
            item = render_finetune(sentences, self.tokenizer, self.max_length)
        if ex.label is not None:
            item["label"] = float(ex.label) if self.regression else self.task.label_id(ex.label)
        return item

    # --------------------------------------------------------------------------- Dataset
    def __len__(self):
        return self.num_queries * self.num_sample

    def __getitem__(self, i):
        if self.features is not None:
            return dict(self.features[i])
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._make(i)  # train with demos: fresh demos on every access


def build_dataset(split: str, examples: Sequence, support_examples: Optional[Sequence],
                  tokenizer, *, task, spec: PromptSpec, data_dir: Optional[str] = None,
                  seed=None) -> FewShotDataset:
    """Build the dataset for one split.

    split: 'train' | 'dev' | 'test'.  examples: the split's InputExamples (queries).
    support_examples: the training examples demos are drawn from (defaults to ``examples`` for
    train).  task: a Task (or task name).  spec: how to render (``PromptSpec``; its label-word ids
    set in prompt modes).  data_dir: where --demo_filter's embedding files are.  seed: None =
    NumPy global RNG, int = a private RNG seeded with it, a ``np.random.RandomState`` = that
    stream, shared with whoever else draws from it.
    """
    return FewShotDataset(split, examples, support_examples, tokenizer, task=task, spec=spec,
                          data_dir=data_dir, seed=seed)


def original_train_sampler(dataset, args) -> RandomSampler:
    """The original's training order (transformers 4.28): a RandomSampler whose generator is seeded
    by --data_seed, or else by one int64 drawn from the global torch RNG as the sampler is built
    (right after the Trainer seeded it with --seed), and then runs on across epochs."""
    g = torch.Generator()
    g.manual_seed(int(args.data_seed) if args.data_seed is not None
                  else int(torch.empty((), dtype=torch.int64).random_().item()))
    return RandomSampler(dataset, generator=g)


class Collator:
    """Pad a list of items to the longest in the batch (right padding) into torch tensors."""

    def __init__(self, pad_token_id: int, pad_token_type_id: int = 0):
        self.pad_token_id = pad_token_id
        self.pad_token_type_id = pad_token_type_id

    def __call__(self, features: Sequence[dict]) -> dict:
        if not features:
            raise ValueError("Collator: empty batch")
        n = max(len(f["input_ids"]) for f in features)

        def pad(key, value):
            return torch.tensor([list(f[key]) + [value] * (n - len(f[key])) for f in features],
                                dtype=torch.long)
        batch = {"input_ids": pad("input_ids", self.pad_token_id),
                 "attention_mask": pad("attention_mask", 0)}
        if "token_type_ids" in features[0]:
            batch["token_type_ids"] = pad("token_type_ids", self.pad_token_type_id)
        if "mask_pos" in features[0]:
            batch["mask_pos"] = torch.tensor([int(f["mask_pos"]) for f in features],
                                             dtype=torch.long)
        if "label" in features[0]:
            labels = [f["label"] for f in features]
            is_float = any(isinstance(x, float) for x in labels)
            batch["labels"] = torch.tensor(labels, dtype=torch.float if is_float else torch.long)
        return batch


def average_over_samples(logits: np.ndarray, labels: np.ndarray, num_sample: int):
    """Average logits over the ``num_sample`` demo resamplings (sample-major layout).

    logits: (num_sample * N, L) or (num_sample * N,); labels: (num_sample * N,).
    Returns (logits averaged over samples with shape (N, L) / (N,), labels of the first copy).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    total = logits.shape[0]
    if num_sample < 1 or total % num_sample != 0 or labels.shape[0] != total:
        raise ValueError(f"average_over_samples: {total} logits rows / {labels.shape[0]} labels "
                         f"cannot be split into num_sample={num_sample} equal copies")
    n = total // num_sample
    avg = logits.reshape(num_sample, n, *logits.shape[1:]).mean(axis=0)
    lab = labels.reshape(num_sample, n, *labels.shape[1:])
    if not (lab == lab[0]).all():
        bad = int(np.argmax((lab != lab[0]).reshape(num_sample, n, -1).any(axis=(0, 2))))
        raise ValueError(f"average_over_samples: labels differ between sample copies (query {bad}"
                         f"); the dataset order is not sample-major")
    return avg, lab[0]
