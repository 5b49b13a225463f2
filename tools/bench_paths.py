"""The other paths of a run against their bare-PyTorch limit, for tools/bench_mezo.py.

  ft_vs_bare      the project's Adam fine-tuning step (MezoTrainer, --optimizer adam: the original's
                  AdamW, linear schedule, clipping at 1.0, logging every 10 steps) against a bare loop
                  over the same model, batch shape, optimizer class, schedule and clipping. A step is
                  timed from one step's end to the next (data loading, logging and callbacks
                  included), the median taken per repetition; repetitions alternate Trainer and bare
                  loop, and the ratio is the median of the per-repetition ratios.
  eval_vs_bare    `Trainer.evaluate` (loss, logits gathered, accuracy) against a bare no_grad loop
                  that collects the same logits and computes the same accuracy.
  startup         seconds from process start to the first training step of a real run.py run
                  (splade-tiny, the demo split, one MeZO step): `startup_s` of its record.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_EVERY = 10   # the scripts' --logging_steps


def make_items(n, batch_input):
    """n dataset rows with the benchmark batch's shape (every row as long as the batch)."""
    ids, pos, labels = batch_input["input_ids"], batch_input["mask_pos"], batch_input["labels"]
    return [{"input_ids": ids[i % len(ids)].tolist(), "attention_mask": [1] * ids.shape[1],
             "mask_pos": int(pos[i % len(ids)]), "label": int(labels[i % len(ids)])} for i in range(n)]


def _accuracy(pred):
    return {"acc": float((np.asarray(pred.predictions).argmax(-1) == np.asarray(pred.label_ids)).mean())}


def _trainer(model, items, batch, steps, out_dir, device):
    from mezo.config.arguments import MezoTrainingArguments
    from mezo.data.datasets import Collator
    from mezo.training.trainer import MezoTrainer
    args = MezoTrainingArguments(output_dir=out_dir, per_device_train_batch_size=batch,
                                 per_device_eval_batch_size=batch, max_steps=steps, learning_rate=1e-5,
                                 optimizer="adam", logging_steps=LOG_EVERY, disable_tqdm=True, seed=0,
                                 use_cpu=device == "cpu")
    return MezoTrainer(model=model, args=args, train_dataset=items, data_collator=Collator(1),
                       compute_metrics=_accuracy, dev_objective=lambda m: m["eval_acc"])


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _intervals(stamps, skip):
    """Step times from consecutive step-end stamps, the first `skip` (warm-up) left out."""
    return [b - a for a, b in zip(stamps, stamps[1:])][skip:]


def trainer_ft(model, items, batch, steps, device, skip=1):
    from transformers import TrainerCallback

    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            _sync(device)
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(model, items, batch, steps, out, device)
        trainer.add_callback(Stamp())
        trainer.train()
    return _intervals(stamps, skip)


def bare_ft(model, items, batch, steps, device, skip=1):
    """The same training with nothing but PyTorch: loader, forward, backward, clip, AdamW, schedule."""
    from mezo.data.datasets import Collator
    from mezo.training.original_adamw import OriginalAdamW
    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(items, batch_size=batch, shuffle=True, generator=g, collate_fn=Collator(1))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OriginalAdamW(params, lr=1e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    model.train()
    stamps, step, loss_sum = [], 0, 0.0
    while step < steps:
        for inputs in loader:
            inputs = {k: v.to(device) for k, v in inputs.items()}
            loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % LOG_EVERY == 0:
                loss_sum += loss.item()   # the one host read a logging loop needs
            _sync(device)
            stamps.append(time.perf_counter())
            if step == steps:
                break
    return _intervals(stamps, skip)


def trainer_eval(model, items, batch, device):
    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(model, items, batch, 1, out, device)
        _sync(device)
        t0 = time.perf_counter()
        metrics = trainer.evaluate(items)
        _sync(device)
    return time.perf_counter() - t0, metrics["eval_acc"]


def bare_eval(model, items, batch, device):
    from mezo.data.datasets import Collator
    _sync(device)
    t0 = time.perf_counter()
    model.eval()
    loader = torch.utils.data.DataLoader(items, batch_size=batch, collate_fn=Collator(1))
    logits, labels, losses = [], [], []
    with torch.no_grad():
        for inputs in loader:
            inputs = {k: v.to(device) for k, v in inputs.items()}
            out = model(**inputs)
            losses.append(out.loss)
            logits.append(out.logits)
            labels.append(inputs["labels"])
    logits, labels = torch.cat(logits).float().cpu().numpy(), torch.cat(labels).cpu().numpy()
    acc = float((logits.argmax(-1) == labels).mean())
    float(torch.stack(losses).mean())
    _sync(device)
    return time.perf_counter() - t0, acc


def ft_and_eval_vs_bare(model, batch_input, batch, reps, device, ft_steps=12, eval_batches=16):
    """Interleaved repetitions of (Trainer FT, bare FT, Trainer eval, bare eval); medians and ratios."""
    items = make_items(batch * max(ft_steps, eval_batches), batch_input)
    eval_items = items[:batch * eval_batches]
    for p in model.parameters():
        p.requires_grad_(True)
    ft_t, ft_b, ev_t, ev_b, accs = [], [], [], [], set()
    for rep in range(-1, reps):   # rep -1: warm-up
        t = statistics.median(trainer_ft(model, items, batch, ft_steps, device))
        b = statistics.median(bare_ft(model, items, batch, ft_steps, device))
        (et, acc_t), (eb, acc_b) = trainer_eval(model, eval_items, batch, device), bare_eval(model, eval_items, batch, device)
        accs.add((acc_t, acc_b))
        if rep >= 0:
            ft_t.append(t), ft_b.append(b), ev_t.append(et), ev_b.append(eb)
        print(f"  {'warm-up' if rep < 0 else 'rep ' + str(rep)}: FT step trainer {t:.3f}s bare {b:.3f}s; "
              f"eval trainer {et:.3f}s bare {eb:.3f}s", flush=True)
    return {"ft_step_over_bare": statistics.median(a / b for a, b in zip(ft_t, ft_b)),
            "eval_over_bare": statistics.median(a / b for a, b in zip(ev_t, ev_b)),
            "ft_step_trainer_s": statistics.median(ft_t), "ft_step_bare_s": statistics.median(ft_b),
            "eval_trainer_s": statistics.median(ev_t), "eval_bare_s": statistics.median(ev_b),
            # the Trainer's fixed cost per evaluate() call (loader, wrapping, gathering, callbacks)
            "eval_overhead_ms": 1e3 * statistics.median(a - b for a, b in zip(ev_t, ev_b)),
            "eval_same_accuracy": all(a == b for a, b in accs), "eval_rows": len(eval_items)}


def startup(runs=1):
    """Median `startup_s` of `runs` real run.py processes (splade-tiny, uci-sentiment 16-42, 1 MeZO step)."""
    values = []
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log")
        cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--model_name_or_path", "splade-tiny",
               "--task_name", "uci-sentiment", "--data_dir", os.path.join(ROOT, "data/k-shot-1k-test/uci-sentiment/16-42"),
               "--few_shot_type", "prompt", "--template", "*cls**sent_0*_It_was*mask*.*sep+*",
               "--mapping", "{0:'terrible',1:'great'}", "--output_dir", os.path.join(tmp, "out"),
               "--overwrite_output_dir", "--log_file", log, "--do_train", "--do_eval", "--max_steps", "1",
               "--per_device_train_batch_size", "16", "--first_sent_limit", "110", "--zero_order_optim",
               "--efficient_zero_order", "--optimizer", "sgd", "--disable_tqdm", "true"]
        for _ in range(runs):
            subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
        with open(log) as f:
            values = [json.loads(line)["startup_s"] for line in f if line.strip()]
    return statistics.median(values)
