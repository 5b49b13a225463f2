"""Time and memory of one MeZO step against two forward passes, on a RoBERTa-large-shaped model.

    python tools/bench_mezo.py                       # RoBERTa-large shape, batch 64 x 64, fp32, CPU
    python tools/bench_mezo.py --shape base --reps 5
    python tools/bench_mezo.py --device cuda --dtype bf16
    python tools/bench_mezo.py --quick               # tiny model, batch 4 x 16, 2 reps (CI smoke test)
    python tools/bench_mezo.py --methods all         # also every --zo_method (or e.g. --methods mezo,fzoo)

The model is a randomly initialised RobertaForMaskedLM of the chosen shape (nothing is
downloaded) wrapped as the project's prompt-based classifier (mezo.models.prompt_mlm.PromptMLM: loss = cross-entropy
over two label words at the mask). All parameters are trainable, as in full MeZO. Measured, each
after a warm-up and as the median over --reps repetitions run interleaved (so that other load on
the machine hits every variant alike):

  fwd        one ZO forward (eval mode, no_grad)
  default    mezo.zo.mezo_step with FastNoise (three noise passes; restore and update fused)
  cache      the same with FastNoise(cache_z=True) (one noise draw; one extra copy of the parameters)
  reference  the reference's step: torch.manual_seed(s) + torch.normal per parameter, four
             regenerations, out-of-place `p.data = p.data + ...` updates

  fwd_bf16, default_bf16   the forward and the default step with the forwards under bf16 autocast
             over the fp32 weights (what --bf16 runs; fp32 --dtype only)

then (tools/bench_paths.py) the project's Adam FT step and its evaluation against bare PyTorch loops
on the same model and batch shape, and the start-up of a real run.py process (`startup_s`), and
the peak memory of a forward and of a default (and a cached) step, each in a fresh child
process (see below).

With --methods, each zeroth-order method of --zo_method (mezo.zo.methods.build on all the
trainable parameters, the methods' default hyper-parameters: FZOO N=8, LOZO rank 4 / nu 50, ...)
joins the interleaved timings, and its peak memory over two steps is measured in its own child
process. Its step_over_2fwd is the step's time over two of its own forwards (its forward time
divided by the number of forwards it made), so a method with more forwards (conservative 5,
HiZOO 3, FZOO N+1) shows them as a larger figure; step_over_own_fwds is the step over all its
forwards (the overhead beyond them). The memory of each operation is measured in a fresh child
process: on CPU the peak RSS (VmHWM, reset after the model is built) minus the RSS before the
model was built (so the interpreter and libraries do not count); on CUDA
torch.cuda.max_memory_allocated. The last printed line is one JSON object whose keys include
step_over_2fwd_default, step_over_2fwd_cache, step_over_2fwd_reference, mem_over_inference,
bf16_fwd_speedup, step_over_2fwd_bf16, ft_step_over_bare, eval_over_bare and startup_s, and with
--methods a key "methods": {name: {step_over_2fwd, mem_over_inference, forwards_per_step, ...}}.
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch

SHAPES = {
    "large": dict(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096),
    "base": dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072),
    "mini": dict(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512),   # the demo model's (splade-tiny, BERT-tiny) dimensions
    "tiny": dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EPS, LR = 1e-3, 1e-6


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="large")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's choice); noise workers follow")
    ap.add_argument("--workers", type=int, default=None,
                    help="noise threads for mezo.zo (default: torch.get_num_threads())")
    ap.add_argument("--no_memory", action="store_true", help="skip the memory measurements")
    ap.add_argument("--no_bf16", action="store_true", help="skip the bf16-autocast forward and step")
    ap.add_argument("--no_ft", action="store_true", help="skip the FT-step and evaluation comparisons")
    ap.add_argument("--no_startup", action="store_true", help="skip the run.py start-up measurement")
    ap.add_argument("--eval_batches", type=int, default=16, help="batches per timed evaluation")
    ap.add_argument("--ft_steps", type=int, default=12,
                    help="FT steps per repetition (the first two are not timed; logging every 10)")
    ap.add_argument("--methods", default=None,
                    help="also time and measure these --zo_method methods: 'all' or a comma list (e.g. mezo,fzoo)")
    ap.add_argument("--quick", action="store_true", help="tiny shape, batch 4, length 16, 2 reps")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.methods = parse_methods(ap, args.methods)
    if args.quick:
        args.shape, args.batch, args.length, args.reps, args.ft_steps, args.eval_batches = "tiny", 4, 16, 2, 4, 4
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def parse_methods(ap, text):
    """--methods: [] when not given, every method for 'all', else the listed ones (checked, in order)."""
    if text is None:
        return []
    from mezo.zo.methods import OPTIMIZERS as METHODS
    names = list(METHODS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        ap.error(f"--methods: unknown method(s) {', '.join(bad) or repr(text)} "
                 f"(use 'all' or a comma list of: {', '.join(METHODS)})")
    return list(dict.fromkeys(names))


def build_method(name, params):
    """One --zo_method on the trainable parameters, with the method's default hyper-parameters."""
    from mezo.zo.methods import build
    return build(name, params, lr=LR, eps=EPS)


# ---------------------------------------------------------------------------- model and batch
class _LocalPromptMLM(torch.nn.Module):
    """Fallback when mezo.models.prompt_mlm is unusable: loss at the mask over two label words."""

    def __init__(self, mlm, label_word_ids):
        super().__init__()
        self.roberta, self.lm_head = mlm.roberta, mlm.lm_head
        self.lm_head.decoder.weight = torch.nn.Parameter(self.lm_head.decoder.weight.detach().clone())
        self.classifier = torch.nn.Linear(mlm.config.hidden_size, len(label_word_ids))
        self.register_buffer("label_word_ids", torch.tensor(label_word_ids), persistent=False)

    def forward(self, input_ids, attention_mask, mask_pos, labels):
        h = self.roberta(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        h = h[torch.arange(len(h), device=h.device), mask_pos]
        head = self.lm_head
        feats = head.layer_norm(torch.nn.functional.gelu(head.dense(h)))
        dec, ids = head.decoder, self.label_word_ids
        logits = torch.nn.functional.linear(feats, dec.weight[ids], dec.bias[ids])
        return torch.nn.functional.cross_entropy(logits, labels)


def build(args):
    """Model (eval mode, all parameters trainable), batch and the ZO loss closure."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(0)
    cfg = RobertaConfig(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                        bos_token_id=0, eos_token_id=2, **SHAPES[args.shape])
    mlm = RobertaForMaskedLM(cfg)
    words = [cfg.vocab_size // 3, 2 * cfg.vocab_size // 3]
    try:
        from mezo.models.prompt_mlm import PromptMLM
        model, wrapper = PromptMLM(mlm, 2, label_word_ids=words), "mezo.models.prompt_mlm.PromptMLM"
    except Exception:   # the benchmark must not depend on the rest of the project being ready
        model, wrapper = _LocalPromptMLM(mlm, words), "local"
    model = model.to(device=args.device, dtype=DTYPES[args.dtype]).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    b, n = args.batch, args.length
    ids = torch.randint(5, cfg.vocab_size - 1, (b, n), generator=g)
    ids[:, 0], ids[:, -1] = cfg.bos_token_id, cfg.eos_token_id
    mask_pos = torch.randint(1, n - 1, (b,), generator=g)
    ids[torch.arange(b), mask_pos] = cfg.vocab_size - 1          # <mask>
    labels = torch.randint(0, 2, (b,), generator=g)
    batch = {k: v.to(args.device) for k, v in dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                    mask_pos=mask_pos, labels=labels).items()}

    def loss_fn():
        with torch.no_grad():
            out = model(**batch)
            return out if torch.is_tensor(out) else out.loss
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    return model, params, loss_fn, wrapper, batch


def reference_step(params, loss_fn, seed):
    """The reference's efficient MeZO step (four regenerations, out-of-place updates)."""
    def perturb(scaling):
        torch.manual_seed(seed)
        for p in params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            p.data = p.data + scaling * z * EPS
    perturb(1)
    lp = loss_fn()
    perturb(-2)
    lm = loss_fn()
    g = ((lp - lm) / (2 * EPS)).item()
    perturb(1)
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
        p.data = p.data - LR * (g * z + 0.0 * p.data)
    return lp


# ---------------------------------------------------------------------------- measurements
def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_memory(args, what):
    """Run in a fresh process: peak memory of one operation, returned as JSON on stdout."""
    import transformers  # noqa: F401  (libraries are not part of the footprint)
    from mezo.zo import step as zo
    try:
        import mezo.models.prompt_mlm  # noqa: F401
    except Exception:
        pass

    from mezo.zo.backend import FastNoise
    eng = FastNoise(args.workers, cache_z=(what == "cache"))
    cuda = args.device == "cuda"
    before = torch.cuda.memory_allocated() if cuda else _status_kb("VmRSS")
    model, params, loss_fn, _, _ = build(args)
    _sync(args.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        after_build, resettable = torch.cuda.memory_allocated(), True
    else:
        resettable = _reset_peak_rss()
        after_build = _status_kb("VmRSS") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    method = build_method(what.split(":", 1)[1], params) if what.startswith("method:") else None
    for s in range(2):   # the second call sees steady-state buffers (thread pool, caches)
        if method is not None:
            method.step(loss_fn, seed=s)
        elif what == "fwd":
            loss_fn()
        elif what == "reference":
            reference_step(params, loss_fn, s)
        else:
            zo.mezo_step(params, loss_fn, eng, s, eps=EPS, lr=LR)
    _sync(args.device)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_kb("VmHWM") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(before=before, after_build=after_build, peak=peak)))


def measure_memory(args, what):
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", "mem:" + what,
           "--shape", args.shape, "--batch", str(args.batch), "--length", str(args.length),
           "--dtype", args.dtype, "--device", args.device]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    r = json.loads(out.strip().splitlines()[-1])
    r["footprint"] = r["peak"] - r["before"]          # model + everything the operation needs
    r["growth"] = r["peak"] - r["after_build"]        # beyond the model
    return r


def method_figures(name, times, per_fwd, own, n_fwd, mem, state_numel, two_fwd_s):
    """One method's figures: medians over the repetitions, memory over the forward's (rounded)."""
    k = "method:" + name
    out = dict(step_over_2fwd=statistics.median(per_fwd[k]), step_over_own_fwds=statistics.median(own[k]),
               step_over_2fwd_vs_standalone=statistics.median(times[k]) / two_fwd_s,
               forwards_per_step=int(statistics.median(n_fwd[k])), step_s=statistics.median(times[k]),
               state_numel=state_numel)
    if k in mem:
        out["mem_over_inference"] = mem[k]["footprint"] / mem["fwd"]["footprint"]
        out["mem_footprint_mb"] = mem[k]["footprint"] / 2 ** 20
    return {key: (round(v, 6) if isinstance(v, float) else v) for key, v in out.items()}


def print_methods(figs):
    print()
    print(f"{'--zo_method':<16}{'forwards':>9}{'median s':>10}{'step / 2 fwd':>14}{'/ own fwds':>12}"
          f"{'state (M numbers)':>19}{'memory / inference':>20}")
    for name, f in figs.items():
        mem = f"{f['mem_over_inference']:.3f}" if "mem_over_inference" in f else "-"
        print(f"{name:<16}{f['forwards_per_step']:>9}{f['step_s']:>10.3f}{f['step_over_2fwd']:>14.3f}"
              f"{f['step_over_own_fwds']:>12.3f}{f['state_numel'] / 1e6:>19.1f}{mem:>20}")
    print("(step / 2 fwd: the step's time over two of its own forwards; / own fwds: over all its forwards)")


def timed(fn, device):
    """(wall seconds, process CPU seconds): the CPU time stays meaningful on a busy machine."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    args = parse_args(argv)
    if args._child:
        return child_memory(args, args._child.split(":", 1)[1])
    from mezo.zo import step as zo
    from mezo.zo.backend import FastNoise

    eng, cached = FastNoise(args.workers), FastNoise(args.workers, cache_z=True)
    t0 = time.perf_counter()
    model, params, loss_fn, wrapper, batch = build(args)
    n_params = sum(p.numel() for p in params)
    print(f"model: RoBERTa-{args.shape} ({n_params / 1e6:.1f}M trainable parameters, {wrapper}), "
          f"batch {args.batch} x {args.length}, {args.dtype}, {args.device}; built in "
          f"{time.perf_counter() - t0:.1f}s; torch threads {torch.get_num_threads()}, "
          f"noise workers {eng._n_workers()}", flush=True)

    seeds = iter(range(10 ** 6))
    inner = [0.0, 0.0, 0]   # wall and CPU seconds spent inside the forwards of the current call, and their number

    def zo_loss():
        _sync(args.device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = loss_fn()
        _sync(args.device)
        inner[0] += time.perf_counter() - t0
        inner[1] += time.process_time() - c0
        inner[2] += 1
        return out

    def zo_loss_bf16():   # --bf16: autocast forwards over the fp32 weights (the Trainer's mixed precision)
        with torch.autocast(args.device, dtype=torch.bfloat16):
            return zo_loss()

    variants = {
        "fwd": lambda: zo_loss(),
        "default": lambda: zo.mezo_step(params, zo_loss, eng, next(seeds), eps=EPS, lr=LR),
        "cache": lambda: zo.mezo_step(params, zo_loss, cached, next(seeds), eps=EPS, lr=LR),
        "reference": lambda: reference_step(params, zo_loss, next(seeds)),
    }
    if args.dtype == "fp32" and not args.no_bf16:
        variants["fwd_bf16"] = lambda: zo_loss_bf16()
        variants["default_bf16"] = lambda: zo.mezo_step(params, zo_loss_bf16, eng, next(seeds), eps=EPS, lr=LR)
    methods = {name: build_method(name, params) for name in args.methods}
    for name, m in methods.items():
        variants["method:" + name] = lambda m=m: m.step(zo_loss, seed=next(seeds))
    times, cpu = {k: [] for k in variants}, {k: [] for k in variants}
    own, own_cpu = {k: [] for k in variants}, {k: [] for k in variants}   # step / its own 2 fwd
    per_fwd, n_fwd = {k: [] for k in variants}, {k: [] for k in variants}   # step / 2 of its own fwd; fwd count
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for rep in range(-args.warmup, args.reps):
        for name, fn in variants.items():
            inner[:] = [0.0, 0.0, 0]
            dt, dc = timed(fn, args.device)
            if name == "cache" and rep == args.reps - 1:
                cached.release_cache()
            if rep >= 0:
                times[name].append(dt)
                cpu[name].append(dc)
                own[name].append(dt / max(inner[0], 1e-9))
                own_cpu[name].append(dc / max(inner[1], 1e-9))
                per_fwd[name].append(dt / max(2 * inner[0] / max(inner[2], 1), 1e-9))
                n_fwd[name].append(inner[2])
        print(f"  {'warm-up' if rep < 0 else 'rep ' + str(rep)}: " + ", ".join(
            f"{k} {v[-1]:.3f}s" for k, v in times.items() if v), flush=True)
    state_numel = {name: m.state_numel() for name, m in methods.items()}
    del fn               # free the methods' state (Adam moments, momentum, Sigma) before the memory children
    methods.clear()
    variants.clear()
    med = {k: statistics.median(v) for k, v in times.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    omed = {k: statistics.median(v) for k, v in own.items()}
    ocmed = {k: statistics.median(v) for k, v in own_cpu.items()}
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    paths = {}
    if not args.no_ft:
        import bench_paths  # tools/bench_paths.py, beside this script
        print("FT step and evaluation: the project (Trainer) against a bare PyTorch loop", flush=True)
        batch_input = {k: v.cpu() for k, v in batch.items()}
        paths.update(bench_paths.ft_and_eval_vs_bare(model, batch_input, args.batch, args.reps, args.device,
                                                     ft_steps=args.ft_steps, eval_batches=args.eval_batches))
    if not args.no_startup:
        paths["startup_s"] = bench_paths.startup(1 if args.quick else 3)

    mem = {}
    if not args.no_memory:
        for what in ("fwd", "default") + (() if args.quick else ("cache",)):
            mem[what] = measure_memory(args, what)
        for name in args.methods:
            mem["method:" + name] = measure_memory(args, "method:" + name)

    two = 2 * med["fwd"]
    steps = ("default", "cache", "reference")
    # Main figures: each step against the two forwards it ran itself (same moment, same load),
    # median over the repetitions. On a quiet machine this equals step / (2 x standalone forward),
    # reported as *_vs_standalone; on a shared one it is the figure that survives the noise.
    res = {f"step_over_2fwd_{k}": omed[k] for k in steps}
    if "fwd_bf16" in med:
        res["bf16_fwd_speedup"] = med["fwd"] / med["fwd_bf16"]       # fp32 forward / bf16-autocast forward
        res["step_over_2fwd_bf16"] = omed["default_bf16"]            # bf16 MeZO step / its two bf16 forwards
    res.update({f"step_over_2fwd_{k}_vs_standalone": med[k] / two for k in steps})
    if args.device == "cpu":
        res.update({f"cpu_step_over_2fwd_{k}": ocmed[k] for k in steps})
    if mem:
        res["mem_over_inference"] = mem["default"]["footprint"] / mem["fwd"]["footprint"]
        if "cache" in mem:
            res["mem_over_inference_cache"] = mem["cache"]["footprint"] / mem["fwd"]["footprint"]
    res.update(paths)
    if args.methods:
        res["methods"] = {name: method_figures(name, times, per_fwd, own, n_fwd, mem, state_numel[name], two)
                          for name in args.methods}
    res.update({f"{k}_s": v for k, v in med.items() if not k.startswith("method:")})
    res.update({f"{k}_all_s": [round(x, 4) for x in v] for k, v in times.items() if not k.startswith("method:")})
    if args.device == "cpu":
        res.update({f"{k}_cpu_s": v for k, v in cmed.items() if not k.startswith("method:")})
    for k, m in mem.items():
        if k.startswith("method:"):
            continue
        res[f"mem_{k}_footprint_mb"] = m["footprint"] / 2 ** 20
        res[f"mem_{k}_growth_mb"] = m["growth"] / 2 ** 20
    res.update(shape=args.shape, batch=args.batch, length=args.length, dtype=args.dtype,
               device=args.device, params_m=n_params / 1e6, reps=args.reps,
               torch_threads=torch.get_num_threads(), noise_workers=eng._n_workers(),
               loadavg_start=load0, loadavg_end=load1)

    print()
    cpu_cols = args.device == "cpu"
    print(f"{'':<28}{'median s':>10}{'/ own fwds':>12}{'/ 2 fwd':>10}"
          + (f"{'CPU s':>10}{'CPU / own':>11}" if cpu_cols else ""))
    for k, label in [("fwd", "forward (ZO loss)"), ("default", "mezo_step (default)"),
                     ("cache", "mezo_step (cache_z=True)"), ("reference", "reference step"),
                     ("fwd_bf16", "forward, bf16 autocast"), ("default_bf16", "mezo_step, bf16 autocast")]:
        if k not in med:
            continue
        two_k = 2 * med["fwd_bf16"] if k == "default_bf16" else two
        print(f"{label:<28}{med[k]:>10.3f}{(omed[k] if not k.startswith('fwd') else 1.0):>12.3f}{med[k] / two_k:>10.3f}"
              + (f"{cmed[k]:>10.3f}{(ocmed[k] if not k.startswith('fwd') else 1.0):>11.3f}" if cpu_cols else ""))
    print("(/ own fwds: the step's time over the time of the two forwards inside it; / 2 fwd: over twice"
          " the standalone forward)")
    print(f"(load average {load0:.2f} at the start, {load1:.2f} at the end of the timings)")
    if "ft_step_over_bare" in paths:
        print()
        print(f"{'':<28}{'project s':>10}{'bare s':>10}{'ratio':>10}")
        for k, label in [("ft_step", "FT (Adam) step"), ("eval", f"evaluation, {paths['eval_rows']} rows")]:
            print(f"{label:<28}{paths[k + '_trainer_s' if k == 'ft_step' else 'eval_trainer_s']:>10.3f}"
                  f"{paths[k + '_bare_s' if k == 'ft_step' else 'eval_bare_s']:>10.3f}"
                  f"{paths[k + '_over_bare']:>10.3f}")
    if "startup_s" in paths:
        print(f"start-up (process start to first step of a splade-tiny run.py run): {paths['startup_s']:.2f}s")
    if mem:
        print()
        print(f"{'peak memory':<34}{'MiB':>10}{'/ fwd':>10}{'beyond model MiB':>18}")
        for k, label in [("fwd", "forward"), ("default", "mezo_step (default)"),
                         ("cache", "mezo_step (cache_z=True)")]:
            if k not in mem:
                continue
            print(f"{label:<34}{mem[k]['footprint'] / 2 ** 20:>10.0f}"
                  f"{mem[k]['footprint'] / mem['fwd']['footprint']:>10.3f}{mem[k]['growth'] / 2 ** 20:>18.0f}")
    if args.methods:
        print_methods(res["methods"])
    print(json.dumps({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                      for k, v in res.items()}))


if __name__ == "__main__":
    main()
