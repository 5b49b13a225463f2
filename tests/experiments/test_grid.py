"""tools/grid.py: grid enumeration, restart skipping, --print/--dry-run; the runner is mocked."""
import dataclasses
import io
import os
import shlex
import sys
import time

import pytest

from mezo.experiments import results
from mezo.experiments import grid, report


def fake_record(env, args, test=0.8, dev=0.75):
    """The record run.py would append for a run launched with these env vars and script args."""
    task, k, seed = env["TASK"], int(env["K"]), int(env["SEED"])
    mezo = "EPS" in env
    return {
        "time": "t", "output_dir": f"result/{task}-x-prompt-standard-{env['TAG']}seed{seed}-lr{env.get('LR')}/{k}-{seed}",
        f"{task.lower()}_dev_eval_acc": dev, f"{task.lower()}_test_eval_acc": test,
        "task_name": task.lower(), "tag": env["TAG"], "num_k": k, "seed": seed,
        "data_dir": f"data/k-shot-1k-test/{task}/{k}-{seed}", "trainer": env.get("TRAINER", "standard"),
        "learning_rate": float(env.get("LR", "1e-6" if mezo else "1e-5")),
        "per_device_train_batch_size": int(env.get("BS", "64" if mezo else "8")),
        "zero_order_eps": float(env.get("EPS", "1e-3")), "weight_decay": float(env.get("WD", "0")),
        "max_steps": int(env.get("STEP", "100000" if mezo else "1000")),
        "eval_steps": float(env.get("EVAL_STEP", "10000" if mezo else "100")),
    }


class FakeRunner:
    """Appends the record a successful run.py would write; fails the runs `fail` says."""

    def __init__(self, fail=lambda run: False):
        self.calls = []
        self.fail = fail

    def __call__(self, run):
        self.calls.append(run)
        if self.fail(run):
            return 2
        log = run.args[run.args.index("--log_file") + 1]
        results.append_record(log, fake_record(run.env, run.args))
        return 0


@pytest.mark.parametrize("method,k,count,axes", [
    ("mezo", 16, 15, {"LR": {"1e-7", "1e-6", "1e-5"}, "BS": {"64"}, "EPS": {"1e-3"}, "WD": {"0"}}),
    ("mezo-lora", 16, 15, {"LR": {"1e-5", "5e-5", "1e-4"}, "WD": {"0.1"}, "EPS": {"1e-3"}}),
    ("mezo-prefix", 512, 15, {"LR": {"1e-2", "5e-3", "1e-3"}, "EPS": {"1e-1"}}),
    ("mezo-adam", 16, 15, {"BS": {"64"}}),
    ("ft", 16, 45, {"BS": {"2", "4", "8"}, "LR": {"1e-5", "3e-5", "5e-5"}}),
    ("ft", 512, 45, {"BS": {"8", "16", "32"}}),
    ("ft-lora", 16, 45, {"BS": {"4", "8", "16"}, "LR": {"1e-4", "3e-4", "5e-4"}}),
    ("ft-prefix", 16, 45, {"BS": {"8", "16", "32"}, "LR": {"1e-2", "3e-2", "5e-2"}}),
    ("zero-shot", 16, 5, {}),
    ("lp", 512, 5, {}),
])
def test_enumeration_counts(method, k, count, axes):
    runs = grid.enumerate_runs(method, "SST-2", k)
    assert len(runs) == count
    assert sorted({r.seed for r in runs}) == [13, 21, 42, 87, 100]
    for var, values in axes.items():
        assert {r.env[var] for r in runs} == values
    assert len({tuple(sorted(r.env.items())) for r in runs}) == count  # all distinct


def test_exact_points():
    mezo = grid.enumerate_runs("mezo-lora", "RTE", 16, "roberta-large", seeds=[42], log="log")
    assert mezo[0].script == "mezo.sh"
    assert mezo[0].env == {"TASK": "RTE", "K": "16", "SEED": "42", "BS": "64", "LR": "1e-5", "EPS": "1e-3",
                           "WD": "0.1", "STEP": "100000", "EVAL_STEP": "10000", "MODEL": "roberta-large",
                           "EXTRA_TAG": "lora", "TAG": "k16-roberta-large-mezo-lora"}
    assert mezo[0].args == ["--apply_lora", "--lora_r", "8", "--lora_alpha", "16", "--log_file", "log"]

    ft = grid.enumerate_runs("ft-prefix", "sst-5", 512, "/models/roberta-large/", seeds=[13], log="L",
                             extra=["--per_device_eval_batch_size", "32"])
    assert ft[-1].script == "finetune.sh"
    assert ft[-1].env == {"TASK": "sst-5", "K": "512", "SEED": "13", "BS": "32", "LR": "5e-2", "STEP": "1000",
                          "EVAL_STEP": "100", "MODEL": "/models/roberta-large/", "EXTRA_TAG": "prefix",
                          "TAG": "k512-roberta-large-prefix"}
    assert ft[-1].args == ["--prefix_tuning", "--num_prefix", "5", "--no_reparam", "--prefix_init_by_real_act",
                           "--log_file", "L", "--per_device_eval_batch_size", "32"]

    zs = grid.enumerate_runs("zero-shot", "trec", 16, "splade-tiny", seeds=[87])[0]
    assert zs.env == {"TASK": "trec", "K": "16", "SEED": "87", "MODEL": "splade-tiny", "EXTRA_TAG": "zero-shot",
                      "TAG": "k16-splade-tiny-zero-shot"}
    assert zs.args[0] == "--no_train"
    lp = grid.enumerate_runs("lp", "trec", 16, seeds=[87])[0]
    assert lp.env["TRAINER"] == "linearhead" and lp.match["trainer"] == "linearhead"
    adam = grid.enumerate_runs("mezo-adam", "trec", 16, seeds=[87])[0]
    assert adam.args[:3] == ["--zero_order_use_trainer_optim", "--optimizer", "adam"]
    assert adam.env["TAG"] == "k16-roberta-large-mezo-adam"


def test_steps_and_grid_override():
    runs = grid.enumerate_runs("mezo", "uci-sentiment", 16, "splade-tiny", seeds=[13, 42],
                               grid_override=grid.parse_grid("lr=1e-4,1e-3 bs=16"), steps=200)
    assert len(runs) == 4
    assert {(r.env["LR"], r.env["BS"], r.env["EPS"]) for r in runs} == {("1e-4", "16", "1e-3"), ("1e-3", "16", "1e-3")}
    assert {(r.env["STEP"], r.env["EVAL_STEP"]) for r in runs} == {("200", "20")}
    assert runs[0].match["max_steps"] == 200 and runs[0].match["learning_rate"] == 1e-4
    assert grid.parse_grid('{"learning_rate": [1e-05, "3e-5"], "bs": 4}') == {"lr": ("1e-05", "3e-5"), "bs": ("4",)}
    r = grid.enumerate_runs("ft", "SST-2", 16, steps=50, eval_steps=5, seeds=[13])[0]
    assert (r.env["STEP"], r.env["EVAL_STEP"]) == ("50", "5")
    for bad in ("lr", "foo=1", "lr=abc", "bs=0.5", "{not json"):
        with pytest.raises(grid.UsageError):
            grid.parse_grid(bad)
    with pytest.raises(grid.UsageError):
        grid.enumerate_runs("ft", "SST-2", 16, grid_override={"eps": ("1e-3",)})
    with pytest.raises(grid.UsageError):
        grid.enumerate_runs("nope", "SST-2", 16)


def test_tags_read_back_as_their_method():
    for m in grid.METHOD_NAMES:
        tag = grid.enumerate_runs(m, "SST-2", 16, "roberta-large", seeds=[13])[0].env["TAG"]
        assert report.parse_tag(tag) == (16, "roberta-large", m)


def test_restart_skips_runs_in_log(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "data_exists", lambda run: True)  # pretend every data folder exists
    log = str(tmp_path / "log")
    argv = ["--method", "mezo", "--task", "uci-sentiment", "--model", "splade-tiny", "--grid", "lr=1e-4,1e-3",
            "--steps", "100", "--log", log, "--", "--per_device_eval_batch_size", "32"]
    # A synthetic log holding two of the ten runs, with numbers written differently (1e-4 as 0.0001).
    done = grid.enumerate_runs("mezo", "uci-sentiment", 16, "splade-tiny", seeds=[13, 42],
                               grid_override={"lr": ("0.0001",)}, steps=100)
    for r in done:
        results.append_record(log, fake_record(r.env, r.args))
    # Near misses that must not count: other steps, other tag, other data folder.
    other = dict(fake_record(done[0].env, done[0].args), max_steps=200)
    results.append_record(log, other)
    results.append_record(log, dict(fake_record(done[0].env, done[0].args), tag="k16-splade-tiny-mezo-lora",
                                    seed=21, data_dir="data/k-shot-1k-test/uci-sentiment/16-21"))
    results.append_record(log, dict(fake_record(done[0].env, done[0].args), seed=21))  # data_dir says 13

    runner = FakeRunner()
    out = io.StringIO()
    assert grid.main(argv, runner=runner, out=out) == 0
    assert len(runner.calls) == 8
    assert not any(c.env["LR"] == "1e-4" and c.env["SEED"] in ("13", "42") for c in runner.calls)
    assert "8 to run" in out.getvalue() and "2 already in" in out.getvalue()
    # Progress counts the whole grid: 2 runs were done before the first of the 8 started.
    assert "=== [1/8] (2/10 runs done)" in out.getvalue() and "=== [8/8] (9/10 runs done)" in out.getvalue()
    assert all(c.args[-2:] == ["--per_device_eval_batch_size", "32"] for c in runner.calls)

    again = FakeRunner()
    out = io.StringIO()
    assert grid.main(argv, runner=again, out=out) == 0
    assert again.calls == [] and "0 to run" in out.getvalue()

    out = io.StringIO()
    assert grid.main(argv[:-3] + ["--dry-run"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert sum(line.startswith("[done]") for line in lines) == 10


def test_failures_are_reported_and_grid_continues(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "data_exists", lambda run: True)
    log = str(tmp_path / "log")
    runner = FakeRunner(fail=lambda r: r.seed == 21)
    out = io.StringIO()
    rc = grid.main(["--method", "lp", "--task", "RTE", "--log", log], runner=runner, out=out)
    assert rc == 1 and len(runner.calls) == 5
    text = out.getvalue()
    assert "4 run(s) finished" in text and "1 failed" in text and "FAILED (exit status 2)" in text
    # A runner that exits 0 without writing a record is a failure too.
    out = io.StringIO()
    rc = grid.main(["--method", "zero-shot", "--task", "RTE", "--log", log, "--seeds", "13"],
                   runner=lambda r: 0, out=out)
    assert rc == 1 and "no matching record" in out.getvalue()


def test_print_lines(tmp_path, monkeypatch):
    log = str(tmp_path / "log")
    monkeypatch.chdir(grid.ROOT)
    out = io.StringIO()
    assert grid.main(["--method", "ft", "--task", "SST-2", "--k", "16", "--seeds", "42,100", "--log", log,
                      "--print", "--", "--template", "*cls**sent_0*_It_was*mask*.*sep+*"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 18
    words = shlex.split(lines[0])
    assert words[:11] == ["TASK=SST-2", "K=16", "SEED=42", "BS=2", "LR=1e-5", "STEP=1000", "EVAL_STEP=100",
                          "MODEL=roberta-large", "EXTRA_TAG=ft", "TAG=k16-roberta-large-ft", "bash"]
    assert words[11:] == ["finetune.sh", "--log_file", log, "--template", "*cls**sent_0*_It_was*mask*.*sep+*"]
    # Done runs are left out (unless --all).
    r = grid.enumerate_runs("ft", "SST-2", 16, seeds=[42])[0]
    results.append_record(log, fake_record(r.env, r.args))
    out = io.StringIO()
    grid.main(["--method", "ft", "--task", "SST-2", "--seeds", "42", "100", "--log", log, "--print"], out=out)
    assert len(out.getvalue().splitlines()) == 17
    out = io.StringIO()
    grid.main(["--method", "ft", "--task", "SST-2", "--seeds", "42", "100", "--log", log, "--print", "--all"], out=out)
    assert len(out.getvalue().splitlines()) == 18


def test_cli_errors(capsys):
    assert grid.main(["--method", "mezo", "--task", "sst2"]) == 2
    assert grid.main(["--method", "mezo", "--task", "SST-2", "--", "--learning_rate", "1e-3"]) == 2
    assert grid.main(["--method", "zero-shot", "--task", "SST-2", "--grid", "lr=1e-3"]) == 2
    assert grid.main(["--method", "mezo", "--task", "SST-2", "--seeds", "x"]) == 2
    err = capsys.readouterr().err
    assert "--task 'sst2'" in err and "--learning_rate" in err and "no 'lr' axis" in err


def test_missing_data_folder_fails_without_running(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "data_exists", lambda run: run.seed != 87)
    runner = FakeRunner()
    out = io.StringIO()
    rc = grid.main(["--method", "zero-shot", "--task", "SNLI", "--log", str(tmp_path / "log")], runner=runner, out=out)
    assert rc == 1 and len(runner.calls) == 4 and "no data folder data/k-shot-1k-test/SNLI/16-87" in out.getvalue()


def test_print_from_elsewhere_uses_absolute_script(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    grid.main(["--method", "mezo", "--task", "trec", "--seeds", "13", "--log", "mylog", "--print"], out=out)
    words = shlex.split(out.getvalue().splitlines()[0])
    assert words[words.index("bash") + 1] == grid.os.path.join(grid.ROOT, "mezo.sh")
    assert words[words.index("--log_file") + 1] == str(tmp_path / "mylog")


# ----------------------------------------------------------------------------- submitit launcher

def _cluster_argv(tmp_path, *extra):
    return ["--method", "mezo", "--task", "uci-sentiment", "--model", "splade-tiny", "--seeds", "13", "42",
            "--grid", "lr=1e-4 bs=16", "--steps", "2", "--eval_steps", "1", "--log", str(tmp_path / "log"),
            "--launcher", "local", "--parallel", "2", "--jobs_dir", str(tmp_path / "jobs"), "--timeout", "10",
            *extra, "--", "--no_predict", "--per_device_eval_batch_size", "32", "--disable_tqdm", "true"]


FAKE_RUN = """import os, sys, time
sys.path.insert(0, {tests!r})
from test_grid import fake_record
from mezo.experiments import results
time.sleep(1.0)  # long enough for the test to cancel the job first
args = sys.argv[1:]
results.append_record(args[args.index("--log_file") + 1], dict(fake_record(os.environ, args), argv=args))
"""


def test_local_executor_kill_and_restart_fast(tmp_path, monkeypatch):
    """The submitit path with a stand-in script (writes the record run.py would): kill, restart, skip."""
    script = tmp_path / "fake.sh"
    (tmp_path / "fake_run.py").write_text(FAKE_RUN.format(tests=os.path.dirname(os.path.abspath(__file__))))
    script.write_text(f'exec "{sys.executable}" "{tmp_path / "fake_run.py"}" "$@"\n')
    real = grid.enumerate_runs
    monkeypatch.setattr(grid, "enumerate_runs", lambda *a, **kw: [dataclasses.replace(r, script=str(script))
                                                                   for r in real(*a, **kw)])
    monkeypatch.setattr(grid, "data_exists", lambda run: True)
    log = str(tmp_path / "log")
    argv = ["--method", "mezo", "--task", "SST-2", "--seeds", "13", "42", "--grid", "lr=1e-4", "--steps", "20", "--log", log,
            "--launcher", "local", "--parallel", "2", "--jobs_dir", str(tmp_path / "jobs"), "--timeout", "5"]
    submitted = []

    def cancel_seed_42(run, job):
        submitted.append(run.seed)
        if run.seed == 42:
            job.cancel()
    out = io.StringIO()
    assert grid.main(argv, out=out, on_submit=cancel_seed_42) == 1, out.getvalue()
    time.sleep(1.5)  # a surviving script of the cancelled job would have written its record by now
    assert sorted(submitted) == [13, 42]
    assert [r["seed"] for r in results.read_records(log)] == [13]
    assert "failed" in out.getvalue() and "1 run(s) finished" in out.getvalue()

    again = []
    out = io.StringIO()
    assert grid.main(argv, out=out, on_submit=lambda run, job: again.append(run.seed)) == 0, out.getvalue()
    assert again == [42] and "[2/2 runs done]" in out.getvalue()
    records = results.read_records(log)
    assert sorted(r["seed"] for r in records) == [13, 42]
    # Each job got checkpoints every eval_steps (20 // 10) and resumes from the newest.
    assert all(r["argv"][-6:] == ["--log_file", log, "--save_steps", "2", "--resume_from_checkpoint", "auto"]
               for r in records)

    out = io.StringIO()
    assert grid.main(argv, out=out, on_submit=lambda run, job: again.append(run.seed)) == 0
    assert again == [42] and "0 to submit" in out.getvalue()


@pytest.mark.slow
def test_local_executor_grid_with_a_killed_run_restarts_only_that_run(tmp_path):
    """Two real 2-step runs as submitit jobs; the seed-42 job is cancelled; the rerun submits only it."""
    submitted = []

    def cancel_seed_42(run, job):
        submitted.append(run.seed)
        if run.seed == 42:
            job.cancel()  # as `scancel`: the job, its script and run.py are ended before any record
    out = io.StringIO()
    assert grid.main(_cluster_argv(tmp_path), out=out, on_submit=cancel_seed_42) == 1, out.getvalue()
    assert sorted(submitted) == [13, 42]
    assert [r["seed"] for r in results.read_records(str(tmp_path / "log"))] == [13]
    assert "1 run(s) finished, 0 skipped (already done), 1 failed" in out.getvalue()

    again = []
    out = io.StringIO()
    assert grid.main(_cluster_argv(tmp_path), out=out, on_submit=lambda run, job: again.append(run.seed)) == 0, \
        out.getvalue()
    assert again == [42]
    assert "1 already in" in out.getvalue() and "[2/2 runs done]" in out.getvalue()
    records = results.read_records(str(tmp_path / "log"))
    assert sorted(r["seed"] for r in records) == [13, 42]
    # Every job ran resumable: checkpoints every eval_steps updates, resume from the newest.
    assert all(r["max_steps"] == 2 and r["save_steps"] == 1 for r in records)
    assert not os.path.exists(os.path.join(grid.ROOT, "result", "uci-sentiment-splade-tiny-prompt-standard-"
                                           "k16-splade-tiny-mezo-ftseed42-bs16-lr1e-4-eps1e-3-wd0-step2-evalstep1"))


def test_resumable_jobs_and_preemption_hook():
    run = grid.enumerate_runs("mezo-lora", "RTE", 16, seeds=[13], steps=50, log="L", extra=["--save_steps", "7"])[0]
    r = grid.resumable(run, 5)
    # Inserted before the flags after `--`, so that a user's --save_steps (the last one) wins in run.py.
    assert r.args == ["--apply_lora", "--lora_r", "8", "--lora_alpha", "16", "--log_file", "L", "--save_steps", "5",
                      "--resume_from_checkpoint", "auto", "--save_steps", "7"]
    assert run.args[-2:] == ["--save_steps", "7"] and "--resume_from_checkpoint" not in run.args
    zero_shot = grid.enumerate_runs("zero-shot", "RTE", 16, seeds=[13])[0]
    assert grid.resumable(zero_shot, 5) is zero_shot  # no training, nothing to resume
    job = grid.GridJob(r)
    again = job.checkpoint()  # what submitit calls on preemption / timeout: the same run again
    assert isinstance(again.function, grid.GridJob) and again.function.run == r
    import pickle
    assert pickle.loads(pickle.dumps(job)).run == r


def test_launcher_flag_errors(capsys):
    base = ["--method", "mezo", "--task", "SST-2", "--launcher", "local"]
    assert grid.main(base + ["--timeout", "0"]) == 2
    assert grid.main(base + ["--parallel", "0"]) == 2
    assert "--timeout" in capsys.readouterr().err


def test_slurm_gets_one_job_array_of_the_pending_runs(tmp_path, monkeypatch):
    """With `srun`/`sbatch` on PATH (stand-ins that record the batch script) submitit talks Slurm."""
    import glob
    import pickle
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" "{tmp_path}/batch.sh"\necho "Submitted batch job 4242"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(grid, "data_exists", lambda run: True)
    log = str(tmp_path / "log")
    done = grid.enumerate_runs("mezo", "SST-2", 16, seeds=[13], grid_override={"lr": ("1e-4",)}, steps=100)[0]
    results.append_record(log, fake_record(done.env, done.args))
    out = io.StringIO()
    assert grid.main(["--method", "mezo", "--task", "SST-2", "--seeds", "13", "21", "42", "--grid", "lr=1e-4",
                      "--steps", "100", "--log", log, "--launcher", "submitit", "--partition", "gpu",
                      "--gpus_per_node", "2", "--timeout", "90", "--parallel", "1",
                      "--jobs_dir", str(tmp_path / "jobs")], out=out) == 0, out.getvalue()
    assert "1 already in" in out.getvalue() and "submitted 2 job(s) (4242)" in out.getvalue()
    batch = (tmp_path / "batch.sh").read_text()
    for line in ("#SBATCH --array=0-1%1", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --time=90", "#SBATCH --signal=USR2@"):
        assert line in batch, batch
    pickles = sorted(glob.glob(str(tmp_path / "jobs" / "*" / "*_submitted.pkl")))
    jobs = [pickle.load(open(p, "rb")).function for p in pickles]
    assert sorted(j.run.seed for j in jobs) == [21, 42]
    assert all(j.run.args[-4:] == ["--save_steps", "10", "--resume_from_checkpoint", "auto"] for j in jobs)
