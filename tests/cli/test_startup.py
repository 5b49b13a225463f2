"""`startup_s` in the record: seconds from process start (not from main()) to the first training step."""
import json
import time

import psutil

from mezo.cli import run
import tiny


def test_startup_s_counts_from_process_start_to_first_step(tmp_path, one_thread):
    data = tiny.small_uci_split(tmp_path / "data", 8)
    log = tmp_path / "log"
    argv = ["--model_name_or_path", "splade-tiny", "--task_name", "uci-sentiment", "--data_dir", data,
            "--few_shot_type", "prompt", "--template", "*cls**sent_0*_It_was*mask*.*sep+*",
            "--mapping", "{0:'terrible',1:'great'}", "--output_dir", str(tmp_path / "out"),
            "--log_file", str(log), "--do_train", "--max_steps", "1", "--per_device_train_batch_size", "4",
            "--zero_order_optim", "--efficient_zero_order", "--optimizer", "sgd", "--disable_tqdm", "true"]
    already = time.time() - psutil.Process().create_time()   # this pytest process is older than main()
    assert run.main(argv) == 0
    rec = json.loads(log.read_text())
    assert already <= rec["startup_s"] <= already + rec["wall_time_s"]
