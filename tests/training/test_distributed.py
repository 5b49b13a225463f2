"""Data-parallel runs under torchrun (gloo, 2 CPU processes) equal one process with the same global batch."""
import json
import os
import subprocess
import sys

import pytest
import torch

import tiny

TEMPLATE = "*cls**sent_0*_It_was*mask*.*sep+*"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, repo_root):
    root = tmp_path_factory.mktemp("ddp")
    model = tiny.build_tiny_roberta(str(root / "model"), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    data = tiny.small_uci_split(root / "data", 24)
    return root, model, data


def _run(root, model, data, name, nproc, batch, *extra):
    out, log = root / name, root / f"{name}.log"
    args = ["run.py", "--model_name_or_path", model, "--task_name", "uci-sentiment", "--data_dir", data,
            "--few_shot_type", "prompt", "--template", TEMPLATE, "--mapping", "{0:'terrible',1:'great'}",
            "--output_dir", str(out), "--log_file", str(log), "--do_train", "--do_eval", "--do_predict",
            "--max_steps", "3", "--per_device_train_batch_size", str(batch), "--per_device_eval_batch_size", "8",
            "--seed", "7", "--first_sent_limit", "60", "--save_at_last", "--disable_tqdm", "true", *extra]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(29400 + os.getpid() % 1000), *args]
    else:
        cmd = [sys.executable, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, cwd=tiny.ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return torch.load(out / "trainable_weights.pt"), records


MEZO = ["--zero_order_optim", "--efficient_zero_order", "--optimizer", "sgd", "--lr_scheduler_type", "constant",
        "--learning_rate", "1e-3", "--zero_order_eps", "1e-3"]


@pytest.mark.parametrize("kind,extra", [("mezo", MEZO + ["--zo_check_sync_steps", "1"]),
                                        ("ft", ["--optimizer", "sgd", "--learning_rate", "1e-2"])])
def test_two_ranks_equal_one_process(setup, kind, extra):
    root, model, data = setup
    # global batch 32 = the whole training set: 2 ranks x 16 vs 1 process x 32
    multi, multi_records = _run(root, model, data, f"{kind}-2", 2, 16, *extra)
    single, _ = _run(root, model, data, f"{kind}-1", 1, 32, *extra)
    assert len(multi_records) == 1  # written once, by rank 0
    assert multi_records[0]["global_step"] == 3 and multi_records[0]["world_size"] == 2
    for name in single:
        torch.testing.assert_close(multi[name], single[name], atol=1e-5, rtol=1e-4)
