"""Smoke test of tools/bench_mezo.py: it runs and ends with the JSON summary (nothing about speed)."""
import json
import math
import os
import subprocess
import sys

KEYS = ("step_over_2fwd_default", "step_over_2fwd_cache", "step_over_2fwd_reference",
        "mem_over_inference", "ft_step_over_bare", "eval_over_bare", "bf16_fwd_speedup", "step_over_2fwd_bf16",
        "startup_s")


def test_bench_quick_prints_json_summary(repo_root):
    out = subprocess.run([sys.executable, os.path.join(repo_root, "tools", "bench_mezo.py"), "--quick"],
                         cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    res = json.loads(lines[-1])
    for k in KEYS:
        assert k in res, k
        assert isinstance(res[k], (int, float)) and math.isfinite(res[k]) and res[k] > 0, (k, res[k])
    assert any("mezo_step" in line for line in lines[:-1])   # the readable table came first
    assert res["eval_same_accuracy"] is True   # the Trainer's evaluation and the bare loop agree
