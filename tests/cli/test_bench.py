"""Smoke test of tools/bench_mezo.py: it runs and ends with the JSON summary (nothing about speed)."""
import json
import math
import os
import subprocess
import sys

from mezo.zo.methods import OPTIMIZERS as METHODS

KEYS = ("step_over_2fwd_default", "step_over_2fwd_cache", "step_over_2fwd_reference",
        "mem_over_inference", "ft_step_over_bare", "eval_over_bare", "bf16_fwd_speedup", "step_over_2fwd_bf16",
        "startup_s")


def _bench(repo_root, *flags):
    return subprocess.run([sys.executable, os.path.join(repo_root, "tools", "bench_mezo.py"), *flags],
                          cwd=repo_root, capture_output=True, text=True, timeout=600)


def test_bench_quick_prints_json_summary(repo_root):
    out = _bench(repo_root, "--quick", "--methods", "adam")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    res = json.loads(lines[-1])
    for k in KEYS:
        assert k in res, k
        assert isinstance(res[k], (int, float)) and math.isfinite(res[k]) and res[k] > 0, (k, res[k])
    assert any("mezo_step" in line for line in lines[:-1])   # the readable table came first
    assert res["eval_same_accuracy"] is True   # the Trainer's evaluation and the bare loop agree
    adam = res["methods"]["adam"]   # a method's memory child runs too (every method's timing: below)
    assert set(res["methods"]) == {"adam"}
    assert math.isfinite(adam["mem_over_inference"]) and adam["mem_over_inference"] > 0


# Forwards per step, as each paper defines its step: the SPSA pair (2); conservative's l0 at theta
# plus the pair plus theta -/+ lr g z (5); HiZOO's pair plus the loss at theta (3); FZOO's loss at
# theta plus N = 8 one-sided estimates (9).
FORWARDS = {"mezo": 2, "sign": 2, "conservative": 5, "momentum": 2, "adam": 2, "hizoo": 3, "lozo": 2,
            "lozo_m": 2, "fzoo": 9}
# Stored numbers per trainable parameter: heavy-ball m (1), Adam's m and v (2), HiZOO's Sigma (1).
FULL_STATE = {"momentum": 1, "adam": 2, "hizoo": 1}


def test_bench_quick_every_method(repo_root):
    out = _bench(repo_root, "--quick", "--methods", "all", "--no_memory", "--no_ft", "--no_startup", "--no_bf16")
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    figs = res["methods"]
    assert list(figs) == list(METHODS) and set(FORWARDS) == set(METHODS)
    n_params = round(res["params_m"] * 1e6)
    for name, f in figs.items():
        assert f["forwards_per_step"] == FORWARDS[name], name
        for k in ("step_over_2fwd", "step_over_own_fwds", "step_over_2fwd_vs_standalone", "step_s"):
            assert math.isfinite(f[k]) and f[k] > 0, (name, k, f[k])
        # over 2 of its own forwards = over all its forwards x (forwards / 2), rep by rep
        assert math.isclose(f["step_over_2fwd"], f["step_over_own_fwds"] * FORWARDS[name] / 2, rel_tol=1e-4)
        if name in FULL_STATE:
            assert f["state_numel"] == FULL_STATE[name] * n_params, name
        elif name in ("mezo", "sign", "conservative", "fzoo"):
            assert f["state_numel"] == 0, name
        else:   # LOZO: V (and LOZO-M's M) are a rank-r fraction of the matrices
            assert 0 < f["state_numel"] < n_params, name
        assert "mem_over_inference" not in f   # --no_memory
    assert any(line.startswith("fzoo") for line in out.stdout.splitlines())   # the readable table


def test_bench_rejects_unknown_method(repo_root):
    out = _bench(repo_root, "--quick", "--methods", "mezo,nosuch")
    assert out.returncode == 2
    assert "--methods" in out.stderr and "nosuch" in out.stderr
