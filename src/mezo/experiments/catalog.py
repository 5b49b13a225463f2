"""The paper's experiment catalogue: seeds, tasks, methods (script, tag suffix, flags, grid).

One table, read by tools/grid.py (to enumerate runs and build tags), tools/report.py (to read the
method back from a tag) and the tests. Grids are the paper's Table 15 (NeurIPS version, Appendix
E.3; docs/behaviour.md, "Paper grids and results") unless a method's ``note`` says otherwise.
"""
from dataclasses import dataclass
from typing import Dict

SEEDS = (13, 21, 42, 87, 100)
TASKS = ("SST-2", "sst-5", "SNLI", "MNLI", "RTE", "trec", "uci-sentiment",
         # also known to run_fewshot.sh (not in the paper's tables):
         "mr", "cr", "mpqa", "subj", "CoLA", "QNLI", "MRPC", "QQP")
LORA = ["--apply_lora", "--lora_r", "8", "--lora_alpha", "16"]
PREFIX = ["--prefix_tuning", "--num_prefix", "5", "--no_reparam", "--prefix_init_by_real_act"]


@dataclass(frozen=True)
class Method:
    name: str
    script: str            # finetune.sh or mezo.sh
    suffix: str            # tag = k<K>-<model>-<suffix>
    extra_tag: str         # EXTRA_TAG for the script (only used in its default tag)
    grid: Dict[str, tuple]  # axis -> values (strings, as they go into env vars and GRID_TAG)
    flags: tuple = ()
    trainer: str = "standard"
    trains: bool = True    # False: no steps (zero-shot, linear probe)
    note: str = ""


def zo_flags(method: str, **hyper) -> tuple:
    """run.py flags of a --zo_method and its hyper-parameters, named as the method declares them."""
    from mezo.zo.methods import OPTIMIZERS
    declared = OPTIMIZERS[method].hyper
    return ("--zo_method", method, *(x for k, v in hyper.items() for x in ("--" + declared[k].flag, v)))


def _ft_grid(k):
    return {"bs": ("8", "16", "32") if k >= 512 else ("2", "4", "8"), "lr": ("1e-5", "3e-5", "5e-5")}


def methods(k: int) -> Dict[str, Method]:
    mezo_grid = {"bs": ("64",), "lr": ("1e-7", "1e-6", "1e-5"), "eps": ("1e-3",), "wd": ("0",)}
    ms = [
        Method("mezo", "mezo.sh", "mezo-ft", "ft", mezo_grid),
        Method("mezo-lora", "mezo.sh", "mezo-lora", "lora",
               {"bs": ("64",), "lr": ("1e-5", "5e-5", "1e-4"), "eps": ("1e-3",), "wd": ("0.1",)}, tuple(LORA)),
        Method("mezo-prefix", "mezo.sh", "mezo-prefix", "prefix",
               {"bs": ("64",), "lr": ("1e-2", "5e-3", "1e-3"), "eps": ("1e-1",), "wd": ("0",)}, tuple(PREFIX)),
        Method("mezo-adam", "mezo.sh", "mezo-adam", "adam",
               {"bs": ("64",), "lr": ("1e-6", "1e-5", "1e-4"), "eps": ("1e-3",), "wd": ("0",)},
               ("--zero_order_use_trainer_optim", "--optimizer", "adam"),
               note="grid not in the paper's table (assumed); override with --grid"),
        Method("mezo-nondiff", "mezo.sh", "mezo-nondiff", "nondiff", mezo_grid, ("--optimize_acc",),
               note="Table 3 (accuracy objective); grid assumed = MeZO's"),
        # The zeroth-order family (--zo_method; README "The zeroth-order family"). Grids: what each
        # source gives for RoBERTa-large K=16, else MeZO's (the note says which).
        Method("zo-sign", "mezo.sh", "mezo-sign", "sign", mezo_grid, zo_flags("sign"),
               note="ZO-Bench gives no RoBERTa-large grid or step count; MeZO's assumed (100,000 steps)"),
        Method("zo-cons", "mezo.sh", "mezo-cons", "cons", mezo_grid, zo_flags("conservative"),
               note="ZO-Bench gives no RoBERTa-large grid or step count; MeZO's assumed (100,000 steps)"),
        Method("zo-momentum", "mezo.sh", "mezo-momentum", "momentum", mezo_grid,
               zo_flags("momentum", momentum="0.9"),
               note="ZO-Bench gives no RoBERTa-large grid or step count; MeZO's assumed (100,000 steps; momentum 0.9 as in its sweeps)"),
        Method("zo-adam", "mezo.sh", "mezo-zoadam", "zoadam",
               {"bs": ("64",), "lr": ("1e-6", "1e-5", "1e-4"), "eps": ("1e-3",), "wd": ("0",)}, zo_flags("adam"),
               note="ZO-Bench gives no RoBERTa-large grid or step count; MeZO-Adam's assumed (100,000 steps)"),
        Method("hizoo", "mezo.sh", "mezo-hizoo", "hizoo",
               {"bs": ("64",), "lr": ("1e-6",), "eps": ("1e-3",), "wd": ("0",)},
               zo_flags("hizoo", alpha="1e-6"),
               note="the HiZOO medium_models README's SST-2 point; 100,000 steps (its HiZOO.sh default); the paper's grid (appendix) not read"),
        Method("lozo", "mezo.sh", "mezo-lozo", "lozo",
               {"bs": ("64",), "lr": ("1e-7", "1e-6"), "eps": ("1e-3",), "wd": ("0",)},
               zo_flags("lozo", rank="4", nu="100"),
               note="LOZO medium_models README's SST-2 command (lr 1e-7, nu 100) and lozo.sh default (1e-6); 100,000 steps (lozo.sh); the paper's grid not read"),
        Method("lozo-m", "mezo.sh", "mezo-lozom", "lozom",
               {"bs": ("64",), "lr": ("1e-7", "1e-6"), "eps": ("1e-3",), "wd": ("0",)},
               zo_flags("lozo_m", rank="4", nu="100", beta1="0.9"),
               note="as LOZO; beta1 0.9 as the repo's BETA1"),
        Method("fzoo", "mezo.sh", "mezo-fzoo", "fzoo",
               {"bs": ("64",), "lr": ("1e-9", "1e-8", "1e-7"), "eps": ("1e-3",), "wd": ("0",)},
               zo_flags("fzoo", n="8"),
               note="no RoBERTa setting published: the grid brackets the public code's only default (DKmiyan/FZOO "
                    "fzoo.sh, OPT-1.3B: lr 1e-5 in its units = 1.07e-8 here, N 8, eps 1e-3, bs 16, 20,000 steps); "
                    "MeZO's 100,000 steps assumed"),
        Method("ft", "finetune.sh", "ft", "ft", _ft_grid(k)),
        Method("ft-lora", "finetune.sh", "lora", "lora",
               {"bs": ("4", "8", "16"), "lr": ("1e-4", "3e-4", "5e-4")}, tuple(LORA)),
        Method("ft-prefix", "finetune.sh", "prefix", "prefix",
               {"bs": ("8", "16", "32"), "lr": ("1e-2", "3e-2", "5e-2")}, tuple(PREFIX)),
        Method("zero-shot", "finetune.sh", "zero-shot", "zero-shot", {}, ("--no_train",), trains=False),
        Method("lp", "finetune.sh", "lp", "lp", {}, (), trainer="linearhead", trains=False),
    ]
    return {m.name: m for m in ms}


METHOD_NAMES = tuple(methods(16))
# tag suffix -> method name (tools/report.py reads methods back from tags); the scripts' default tags agree.
TAG_SUFFIXES = {m.suffix: m.name for m in methods(16).values()}
DEFAULT_STEPS = {"mezo.sh": (100000, 10000), "finetune.sh": (1000, 100)}
