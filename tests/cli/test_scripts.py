"""finetune.sh and mezo.sh (through run_fewshot.sh) run a few steps on the embedded model."""
import json
import os
import subprocess

import pytest


@pytest.mark.parametrize("script,env", [
    ("finetune.sh", {"BS": "8", "LR": "1e-4"}),
    ("mezo.sh", {"BS": "16", "LR": "1e-4", "EPS": "1e-3"}),
])
def test_script_runs_and_logs_one_record(tmp_path, repo_root, script, env):
    log = tmp_path / "log"
    full_env = dict(os.environ, MODEL="splade-tiny", TASK="uci-sentiment", SEED="42", STEP="2", EVAL_STEP="1",
                    OMP_NUM_THREADS="1", **env)
    p = subprocess.run(["bash", script, "--log_file", str(log), "--per_device_eval_batch_size", "64",
                        "--disable_tqdm", "true"], cwd=repo_root, env=full_env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    (rec,) = [json.loads(line) for line in log.read_text().splitlines()]
    tag = "k16-splade-tiny-mezo-ft" if script == "mezo.sh" else "k16-splade-tiny-ft"
    assert rec["tag"] == tag and rec["global_step"] == 2 and rec["max_steps"] == 2
    assert rec["zero_order_optim"] is (script == "mezo.sh")
    assert rec["data_dir"] == "data/k-shot-1k-test/uci-sentiment/16-42"
    assert [s for s, _ in rec["dev_curve"]] == [1, 2]
    assert 0 <= rec["uci-sentiment_test_eval_acc"] <= 1
    # the run's output folder is removed afterwards (only the record persists), as in the original
    assert not os.path.exists(os.path.join(repo_root, rec["output_dir"]))
