r"""One command per table cell: the paper's hyperparameter grid x five seeds, run restartably.

    python tools/grid.py --method mezo --task SST-2 --k 16                  # run the whole grid
    python tools/grid.py --method ft --task sst-5 --k 512 --dry-run         # list runs, done or not
    python tools/grid.py --method ft-lora --task RTE --k 16 --print > jobs  # one shell line per run
    python tools/grid.py --method mezo --task uci-sentiment --k 16 --model splade-tiny \
        --grid "lr=5e-5,1e-4 eps=1e-3 bs=16" --steps 200 --log /tmp/grid_log \
        -- --per_device_eval_batch_size 32

Every grid point is one call of finetune.sh or mezo.sh (which call run_fewshot.sh and run.py)
with the environment variables TASK K SEED BS LR [EPS WD] STEP EVAL_STEP MODEL EXTRA_TAG TAG
[TRAINER] and the method's extra flags; TAG is always set explicitly so that every method has
its own tag (`k<K>-<model>-<suffix>`, see METHODS; tools/report.py maps the suffix back):

  method       script       grid (paper Table 15, RoBERTa-large)                extra flags
  mezo         mezo.sh      BS 64, LR {1e-7,1e-6,1e-5}, EPS 1e-3, WD 0            -
  mezo-lora    mezo.sh      BS 64, LR {1e-5,5e-5,1e-4}, EPS 1e-3, WD 0.1          LoRA r 8, alpha 16
  mezo-prefix  mezo.sh      BS 64, LR {1e-2,5e-3,1e-3}, EPS 1e-1, WD 0            5 prefix tokens
  mezo-adam    mezo.sh      BS 64, LR {1e-6,1e-5,1e-4}, EPS 1e-3, WD 0 (*)        --zero_order_use_trainer_optim
                                                                                  --optimizer adam
  mezo-nondiff mezo.sh      as mezo (*)                                           --optimize_acc (Table 3)
  ft           finetune.sh  BS {2,4,8} (K<512) or {8,16,32} (K>=512),             -
                            LR {1e-5,3e-5,5e-5}
  ft-lora      finetune.sh  BS {4,8,16}, LR {1e-4,3e-4,5e-4}                      LoRA r 8, alpha 16
  ft-prefix    finetune.sh  BS {8,16,32}, LR {1e-2,3e-2,5e-2}                     5 prefix tokens
  zero-shot    finetune.sh  one point                                             --no_train
  lp           finetune.sh  one point, TRAINER=linearhead                         -
(*) not in the paper's grid table: an assumption, override it with --grid.
Steps: MeZO 100K with dev evaluation every 10K, FT 1K every 100 (the scripts' defaults);
--steps N overrides (and then --eval_steps defaults to N/10). Seeds: 13 21 42 87 100 (each is
both the data split and the training seed, as in run_fewshot.sh).

--grid replaces grid values, for models other than RoBERTa-large (the paper's learning rates
are far too small for the tiny embedded `splade-tiny`: with BS 16, eps 1e-3 and 200 steps MeZO
trains at lr 1e-4 there, is unstable at 3e-4 and diverges at 1e-3; FT (Adam) works at 1e-4). Either
space-separated `key=v1,v2` items or a JSON object; keys lr, bs, eps, wd (or the run.py names
learning_rate, per_device_train_batch_size, zero_order_eps, weight_decay); keys not given keep
the paper's values:
    --grid "lr=1e-4,1e-3 bs=16"        --grid '{"lr": ["1e-4", "1e-3"], "eps": 1e-3}'

Restart: a run counts as done when the log (--log, passed to run.py as --log_file) holds a
record with the same tag, task_name, num_k, seed, data_dir, trainer and the grid point's
hyperparameters (learning_rate, per_device_train_batch_size, zero_order_eps, weight_decay,
max_steps, eval_steps; numbers compared as numbers). This is more robust than matching the
output_dir string that run_fewshot.sh derives: `LR=1e-5` and `LR=0.00001` are the same run
but different folder names, the folder-name scheme belongs to a shell script (and can be
overridden with `-- --output_dir`), and the record's own fields say what was actually run.
run.py appends the record only after a run has finished, so a crashed run is simply redone.
Flags after `--` go to run.py unchanged (e.g. `--per_device_eval_batch_size 32`); flags that
the grid itself sets (learning rate, batch size, steps, seed, tag, ...) are refused there —
use --grid / --steps instead, otherwise the restart check could never match.

--dry-run lists the runs and which are done; --print writes one shell line per run that is
not done yet (all runs with --all) for a cluster scheduler and runs nothing. Without them the
runs go one after another; a failed run (e.g. a method run.py does not implement yet) is
reported and the grid goes on; the exit status is 1 if any run failed.

On a cluster (the `submitit` library):
    python tools/grid.py --method mezo --task SST-2 --launcher submitit --partition gpu \
        --gpus_per_node 1 --timeout 1440                 # one Slurm job array, returns at once
    python tools/grid.py ... --launcher local --parallel 2   # same jobs on this machine, waited for
Only runs not yet in the log are submitted (rerun the same command after a crash, a cancelled
job or to see progress with --dry-run). Each job runs the same script line as above, plus
`--save_steps S --resume_from_checkpoint auto` (S = --save_steps, default the run's eval_steps):
a preempted or timed-out job is requeued by submitit and continues from its newest checkpoint.
Job logs go to --jobs_dir. --wait (always on for --launcher local) follows the jobs and prints
`runs done / total` as they finish; the exit status is then 1 if any run failed.
"""
import argparse
import itertools
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from mezo.paths import REPO_ROOT as ROOT

from mezo.errors import UsageError
from mezo.experiments.catalog import DEFAULT_STEPS, METHOD_NAMES, SEEDS, TASKS, Method, methods

# Grid axes: short name -> (env var, record field).
AXES = {"bs": ("BS", "per_device_train_batch_size"), "lr": ("LR", "learning_rate"),
        "eps": ("EPS", "zero_order_eps"), "wd": ("WD", "weight_decay")}
ALIASES = {"bs": "bs", "batch_size": "bs", "per_device_train_batch_size": "bs",
           "lr": "lr", "learning_rate": "lr", "eps": "eps", "zero_order_eps": "eps",
           "wd": "wd", "weight_decay": "wd"}
# Env vars the scripts read: never inherited from the caller's shell, only set by the grid.
CONTROLLED = ("TASK", "K", "SEED", "BS", "LR", "EPS", "WD", "STEP", "EVAL_STEP", "MODEL", "EXTRA_TAG", "TAG",
              "TRAINER", "GRID_TAG", "TYPE", "STEPS", "OPT")
# run.py flags the grid sets itself (refused after `--`).
OWNED_FLAGS = ("--learning_rate", "--per_device_train_batch_size", "--zero_order_eps", "--weight_decay",
               "--max_steps", "--eval_steps", "--seed", "--tag", "--task_name", "--data_dir", "--num_k",
               "--model_name_or_path", "--log_file", "--trainer")




def short_model_name(model: str) -> str:
    return os.path.basename(os.path.normpath(model))


def make_tag(method: Method, k: int, model: str) -> str:
    return f"k{k}-{short_model_name(model)}-{method.suffix}"


def parse_grid(text: Optional[str]) -> Dict[str, tuple]:
    """`--grid` text -> {axis: (value strings)}; values must be numbers."""
    if not text or not text.strip():
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"--grid: not valid JSON ({e})")
        if not isinstance(raw, dict):
            raise UsageError("--grid: JSON must be an object")
        items = [(k, v if isinstance(v, list) else [v]) for k, v in raw.items()]
    else:
        items = []
        for part in text.split():
            if "=" not in part:
                raise UsageError(f"--grid: {part!r} is not key=v1,v2,...")
            k, v = part.split("=", 1)
            items.append((k, [x for x in v.split(",") if x != ""]))
    out = {}
    for k, values in items:
        axis = ALIASES.get(k.strip().lower())
        if axis is None:
            raise UsageError(f"--grid: unknown key {k!r} (use lr, bs, eps, wd)")
        if not values:
            raise UsageError(f"--grid: no values for {k!r}")
        strs = []
        for v in values:
            s = str(v).strip()
            try:
                x = float(s)
            except ValueError:
                raise UsageError(f"--grid: {k}={s!r} is not a number")
            if not math.isfinite(x) or x < 0:
                raise UsageError(f"--grid: {k}={s!r} must be a finite number >= 0")
            if axis == "bs" and (x != int(x) or x < 1):
                raise UsageError(f"--grid: bs={s!r} must be a positive integer")
            strs.append(str(int(x)) if axis == "bs" else s)
        out[axis] = tuple(dict.fromkeys(strs))  # keep order, drop repeats
    return out


@dataclass
class Run:
    method: str
    task: str
    k: int
    seed: int
    model: str
    script: str
    env: Dict[str, str]      # the scripts' env vars for this run (ordered)
    args: List[str]          # arguments to the script (passed on to run.py)
    match: Dict[str, object]  # record fields that identify this run in the log
    done: bool = False
    data_ok: bool = True

    @property
    def data_dir(self):
        return f"data/k-shot-1k-test/{self.task}/{self.k}-{self.seed}"

    def describe(self) -> str:
        hp = " ".join(f"{n}={self.env[v]}" for n, (v, _) in AXES.items() if v in self.env)
        steps = f" steps={self.env['STEP']}/{self.env['EVAL_STEP']}" if "STEP" in self.env else ""
        return f"{self.method} {self.task} K={self.k} seed={self.seed} {hp}{steps}".replace("  ", " ").strip()

    def command(self, script_path: Optional[str] = None) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return " ".join([env, "bash", shlex.quote(script_path or self.script)] + [shlex.quote(a) for a in self.args])


def enumerate_runs(method: str, task: str, k: int, model: str = "roberta-large", seeds=SEEDS,
                   grid_override=None, steps=None, eval_steps=None, log="log", extra=()) -> List[Run]:
    ms = methods(k)
    if method not in ms:
        raise UsageError(f"--method {method!r}: expected one of {', '.join(ms)}")
    m = ms[method]
    grid = dict(m.grid)
    for axis, values in (grid_override or {}).items():
        if axis not in grid:
            raise UsageError(f"--grid: method {method} has no {axis!r} axis "
                            f"(it has: {', '.join(grid) or 'none'})")
        grid[axis] = tuple(values)
    if m.trains:
        d_steps, d_eval = DEFAULT_STEPS[m.script]
        n_steps = int(steps) if steps is not None else d_steps
        if eval_steps is not None:
            n_eval = int(eval_steps)
        else:
            n_eval = d_eval if steps is None else max(1, n_steps // 10)
        if n_steps < 1 or n_eval < 1:
            raise UsageError("--steps and --eval_steps must be >= 1")
    tag = make_tag(m, k, model)
    axes = [a for a in ("bs", "lr", "eps", "wd") if a in grid]
    runs = []
    for seed in seeds:
        for values in itertools.product(*(grid[a] for a in axes)):
            env = {"TASK": task, "K": str(k), "SEED": str(seed)}
            match = {"tag": tag, "task_name": task.lower(), "num_k": k, "seed": int(seed),
                     "data_dir": f"data/k-shot-1k-test/{task}/{k}-{seed}", "trainer": m.trainer}
            for a, v in zip(axes, values):
                env[AXES[a][0]] = v
                match[AXES[a][1]] = float(v)
            if m.trains:
                env["STEP"], env["EVAL_STEP"] = str(n_steps), str(n_eval)
                match["max_steps"], match["eval_steps"] = n_steps, n_eval
            env.update(MODEL=model, EXTRA_TAG=m.extra_tag, TAG=tag)
            if m.trainer != "standard":
                env["TRAINER"] = m.trainer
            args = list(m.flags) + ["--log_file", log] + list(extra)
            runs.append(Run(method, task, k, int(seed), model, m.script, env, args, match))
    return runs


def _same(field, want, got) -> bool:
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        try:
            return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    if field == "data_dir" and got is not None:
        return os.path.normpath(str(got)) == os.path.normpath(want)
    return got == want


def is_done(run: Run, records) -> bool:
    return any(all(_same(f, v, r.get(f)) for f, v in run.match.items()) for r in records)


def read_log(path: str):
    from mezo.experiments.results import read_records
    return read_records(path) if os.path.isfile(path) else []


def data_exists(run: Run) -> bool:
    return os.path.isdir(os.path.join(ROOT, run.data_dir))


def mark_done(runs: List[Run], log: str) -> List[Run]:
    records = read_log(log)
    for r in runs:
        r.done = is_done(r, records)
        r.data_ok = data_exists(r)
    return runs


def subprocess_runner(run: Run) -> int:
    """Run one grid point through its shell script; returns the exit status."""
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    env.update(run.env)
    return subprocess.call(["bash", os.path.join(ROOT, run.script)] + run.args, env=env, cwd=ROOT)


def run_grid(runs: List[Run], log: str, runner=subprocess_runner, out=sys.stdout) -> List[tuple]:
    """Run every run that is not done, one after another; returns [(run, why)] of failures."""
    todo = [r for r in runs if not r.done]
    print(f"grid: {len(runs)} runs, {len(runs) - len(todo)} already in {log}, {len(todo)} to run", file=out)
    failures = []
    for i, r in enumerate(todo, 1):
        done = sum(x.done for x in runs)
        print(f"\n=== [{i}/{len(todo)}] ({done}/{len(runs)} runs done) {r.describe()}", file=out, flush=True)
        if not r.data_ok:
            why = f"no data folder {r.data_dir} (tools/generate_k_shot_data.py makes it)"
            print(f"=== failed: {why}", file=out)
            failures.append((r, why))
            continue
        t0 = time.time()
        try:
            rc = runner(r)
        except KeyboardInterrupt:
            print("\ngrid: interrupted; rerun the same command to continue", file=out)
            failures.append((r, "interrupted"))
            break
        if rc != 0:
            why = f"exit status {rc}"
        elif not is_done(r, read_log(log)):
            why = "exited 0 but left no matching record in the log"
        else:
            print(f"=== done in {time.time() - t0:.0f}s", file=out, flush=True)
            r.done = True
            continue
        print(f"=== failed: {why}", file=out, flush=True)
        failures.append((r, why))
    ok = sum(1 for r in todo if r.done)
    print(f"\ngrid: {ok} run(s) finished, {len(runs) - len(todo)} skipped (already done), "
          f"{len(failures)} failed", file=out)
    for r, why in failures:
        print(f"  FAILED ({why}): {r.describe()}\n    {r.command()}", file=out)
    return failures


# ----------------------------------------------------------------------------- submitit launcher

def resumable(run: Run, save_steps: Optional[int]) -> Run:
    """The run with checkpoints every `save_steps` updates and `--resume_from_checkpoint auto`.

    Inserted before the flags given after `--`, so that those still win (run.py: the last one does)."""
    if not save_steps or not methods(run.k)[run.method].trains:
        return run
    i = run.args.index("--log_file") + 2
    args = run.args[:i] + ["--save_steps", str(save_steps), "--resume_from_checkpoint", "auto"] + run.args[i:]
    return Run(run.method, run.task, run.k, run.seed, run.model, run.script, dict(run.env), args, dict(run.match),
               run.done, run.data_ok)


def script_process(run: Run) -> int:
    """Run the grid point's script in its own process group; any interruption ends the whole group.

    A job's signal (cancel, preemption, timeout) reaches only the job's Python process; without
    this, bash and run.py would outlive it and finish (or half-finish) the run unseen."""
    import signal
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    env.update(run.env)
    proc = None
    try:
        proc = subprocess.Popen(["bash", os.path.join(ROOT, run.script)] + run.args, env=env, cwd=ROOT,
                                start_new_session=True)
        return proc.wait()
    except BaseException:
        for sig, grace in ((signal.SIGTERM, 0.5), (signal.SIGKILL, None)) if proc is not None else ():
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        raise


@dataclass
class GridJob:
    """What one submitit job runs: the grid point's script line; requeued as is on preemption."""
    run: Run

    def __call__(self) -> int:
        rc = script_process(self.run)
        if rc != 0:
            raise RuntimeError(f"{self.run.describe()}: exit status {rc}")
        return rc

    def checkpoint(self, *args, **kwargs):
        """submitit's preemption / timeout hook: submit the same job again; run.py resumes (auto)."""
        import submitit
        return submitit.helpers.DelayedSubmission(GridJob(self.run))


class _RootOnPath:
    """Jobs unpickle GridJob in a fresh Python: put the repository on its PYTHONPATH at submission."""

    def __enter__(self):
        self.old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = ROOT + (os.pathsep + self.old if self.old else "")

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = self.old


def make_executor(a):
    """submitit executor for --launcher submitit (Slurm if present, else local) or local."""
    import submitit
    folder = os.path.join(os.path.abspath(a.jobs_dir), "%j")
    if a.launcher == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=a.timeout, gpus_per_node=a.gpus_per_node or 0)
        return ex
    ex = submitit.AutoExecutor(folder=folder)
    gpus = 1 if a.gpus_per_node is None else a.gpus_per_node
    ex.update_parameters(timeout_min=a.timeout, gpus_per_node=gpus, cpus_per_task=a.cpus_per_task,
                         mem_gb=a.mem_gb, name="mezo-grid", slurm_partition=a.partition,
                         slurm_array_parallelism=a.parallel)
    return ex


def job_failure(job, local: bool = False) -> Optional[str]:
    """None if the job returned, else the last line of its error (killed, cancelled, exit status)."""
    if local and not job.paths.result_pickle.exists():
        # result() would wait 15 s for a slow network file system; a local job has written it or never will.
        return f"job {job.job_id} ended without a result (killed or cancelled; see {job.paths.stderr})"
    try:
        job.result()
        return None
    except Exception as e:  # submitit's FailedJobError / UncompletedJobError
        lines = [x for x in str(e).splitlines() if x.strip()]
        return lines[-1].strip() if lines else type(e).__name__


def launch_submitit(runs: List[Run], log: str, a, out=sys.stdout, on_submit=None, poll_s: float = 0.25):
    """Submit the runs not yet in the log; with --wait (always for local jobs) follow them to the end.

    Slurm gets one job array; locally at most --parallel jobs run at once. `on_submit(run, job)` is
    called after each submission (tests use it to kill a job). Returns [(run, why)] of failures."""
    todo = [r for r in runs if not r.done]
    missing = [r for r in todo if not r.data_ok]
    failures = [(r, f"no data folder {r.data_dir} (tools/generate_k_shot_data.py makes it)") for r in missing]
    todo = [r for r in todo if r.data_ok]
    already = len(runs) - len(todo) - len(missing)
    print(f"grid: {len(runs)} runs, {already} already in {log}, {len(todo)} to submit ({a.launcher})",
          file=out, flush=True)
    if not todo:
        return report_failures(runs, [], failures, already, out)
    ex = make_executor(a)
    if getattr(ex, "cluster", "local") != "slurm":
        failures += _run_local(ex, todo, runs, log, a, out, on_submit, poll_s)
        return report_failures(runs, todo, failures, already, out)
    with _RootOnPath(), ex.batch():
        pending = [(r, ex.submit(GridJob(resumable(r, save_steps_for(r, a))))) for r in todo]
    for r, job in pending:
        if on_submit:
            on_submit(r, job)
    print(f"grid: submitted {len(pending)} job(s) ({pending[0][1].job_id.split('_')[0]}); logs in {a.jobs_dir}",
          file=out, flush=True)
    if not a.wait:
        print("grid: rerun this command with --dry-run to see which runs are done", file=out)
        return failures
    while pending:
        finished = [(r, j) for r, j in pending if j.done()]
        for r, j in finished:
            pending.remove((r, j))
            failures += _finish(r, j, runs, log, out)
        if pending:
            time.sleep(max(poll_s, 30.0))
    return report_failures(runs, todo, failures, already, out)


def _run_local(ex, todo, runs, log, a, out, on_submit, poll_s) -> List[tuple]:
    """Local jobs, at most --parallel at a time, followed to the end; Ctrl-C cancels the running ones."""
    queue, running, failures = list(todo), [], []
    with _RootOnPath():
        try:
            while queue or running:
                while queue and len(running) < a.parallel:
                    r = queue.pop(0)
                    running.append((r, ex.submit(GridJob(resumable(r, save_steps_for(r, a))))))
                    if on_submit:
                        on_submit(*running[-1])
                finished = [(r, j) for r, j in running if j.done()]
                for r, j in finished:
                    running.remove((r, j))
                    failures += _finish(r, j, runs, log, out, local=True)
                if not finished:
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            for r, j in running:
                j.cancel()
                failures.append((r, "interrupted"))
            print("\ngrid: interrupted; rerun the same command to continue", file=out)
    return failures


def save_steps_for(run: Run, a) -> Optional[int]:
    if a.save_steps is not None:
        return a.save_steps
    return int(run.env["EVAL_STEP"]) if "EVAL_STEP" in run.env else None


def _finish(r: Run, job, runs, log, out, local=False) -> List[tuple]:
    why = job_failure(job, local)
    if why is None and not is_done(r, read_log(log)):
        why = "exited 0 but left no matching record in the log"
    r.done = why is None
    state = "done" if r.done else f"failed ({why})"
    print(f"=== {state}: {r.describe()}  [{sum(x.done for x in runs)}/{len(runs)} runs done]", file=out, flush=True)
    return [] if r.done else [(r, why)]


def report_failures(runs, submitted, failures, already, out):
    ok = sum(1 for r in submitted if r.done)
    print(f"\ngrid: {ok} run(s) finished, {already} skipped (already done), {len(failures)} failed", file=out)
    for r, why in failures:
        print(f"  FAILED ({why}): {r.describe()}\n    {r.command()}", file=out)
    return failures


def build_parser():
    p = argparse.ArgumentParser(
        usage="%(prog)s --method M --task T [--k K] [--model M] [options] [-- run.py args]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, help="one or more (comma-separated) of: " + ", ".join(METHOD_NAMES))
    p.add_argument("--task", required=True, help="task as the scripts name it (SST-2 sst-5 SNLI MNLI RTE trec "
                                                 "uci-sentiment ...); comma-separated for several")
    p.add_argument("--k", type=int, default=16, help="examples per label (16 or 512 in the paper)")
    p.add_argument("--model", default="roberta-large", help="hub id, local folder or splade-tiny")
    p.add_argument("--seeds", nargs="+", default=None, help="subset of 13 21 42 87 100 (space or comma separated)")
    p.add_argument("--grid", default=None, help='override grid values: "lr=1e-4,1e-3 bs=16" or JSON')
    p.add_argument("--steps", type=int, default=None, help="training steps (default MeZO 100000, FT 1000)")
    p.add_argument("--eval_steps", type=int, default=None, help="dev evaluation interval (default steps/10)")
    p.add_argument("--log", default="log", help="result log (run.py --log_file) read for the restart check")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="list the runs and whether each is done; run nothing")
    g.add_argument("--print", dest="print_cmds", action="store_true",
                   help="write one shell command per pending run (for a scheduler); run nothing")
    p.add_argument("--all", action="store_true", help="with --print: also the runs that are already done")
    c = p.add_argument_group("launching (submitit)")
    c.add_argument("--launcher", choices=("serial", "submitit", "local"), default="serial",
                   help="serial: one after another here (default); submitit: Slurm job array (falls back to "
                        "local jobs without Slurm); local: submitit's local executor on this machine")
    c.add_argument("--partition", default=None, help="Slurm partition")
    c.add_argument("--gpus_per_node", type=int, default=None, help="GPUs per job (default 1; local: 0)")
    c.add_argument("--cpus_per_task", type=int, default=None, help="CPUs per job (Slurm)")
    c.add_argument("--mem_gb", type=float, default=None, help="memory per job in GB (Slurm)")
    c.add_argument("--timeout", type=int, default=24 * 60, help="minutes per job before it is requeued (resuming)")
    c.add_argument("--parallel", type=int, default=1,
                   help="jobs running at once (Slurm: array parallelism; local: processes)")
    c.add_argument("--save_steps", type=int, default=None,
                   help="checkpoint every n updates, for resuming (default: the run's eval_steps; 0: none)")
    c.add_argument("--jobs_dir", default=os.path.join(ROOT, "result", "grid_jobs"),
                   help="submitit's folder for job pickles and logs")
    c.add_argument("--wait", action="store_true", help="Slurm: follow the jobs to the end (local jobs always)")
    return p


def parse_cli(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    a = build_parser().parse_args(argv)
    a.extra = extra
    return a


def _split_list(values):
    return [x for v in values for x in str(v).replace(",", " ").split()]


def main(argv=None, runner=subprocess_runner, out=sys.stdout, on_submit=None) -> int:
    a = parse_cli(argv)
    try:
        for flag in a.extra:
            if flag.split("=", 1)[0] in OWNED_FLAGS:
                raise UsageError(f"{flag} after `--`: the grid sets it (use --grid/--steps/--seeds/--log)")
        seeds = SEEDS
        if a.seeds:
            try:
                seeds = tuple(int(s) for s in _split_list(a.seeds))
            except ValueError:
                raise UsageError(f"--seeds {' '.join(a.seeds)}: integers expected")
            odd = [s for s in seeds if s not in SEEDS]
            if odd:
                print(f"warning: seeds {odd} are not the paper's {list(SEEDS)}", file=sys.stderr)
        tasks = _split_list([a.task])
        for t in tasks:
            if t not in TASKS:
                raise UsageError(f"--task {t!r}: expected one of {', '.join(TASKS)} (case as in run_fewshot.sh)")
        override = parse_grid(a.grid)
        if a.k < 1:
            raise UsageError("--k must be >= 1")
        log = os.path.abspath(a.log)
        # The scripts cd to the repository root: give run.py a path that is right from there.
        log_arg = os.path.relpath(log, ROOT) if log.startswith(ROOT + os.sep) else log
        runs = []
        for method in _split_list([a.method]):
            for task in tasks:
                runs += enumerate_runs(method, task, a.k, a.model, seeds, override, a.steps, a.eval_steps,
                                       log_arg, a.extra)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    mark_done(runs, log)
    for m in {r.method for r in runs}:
        note = methods(a.k)[m].note
        if note:
            print(f"note: {m}: {note}", file=sys.stderr)
    if a.print_cmds:
        here = os.path.abspath(os.getcwd()) == ROOT
        shown = [r for r in runs if a.all or not r.done]
        for r in shown:
            print(r.command(r.script if here else os.path.join(ROOT, r.script)), file=out)
        print(f"# {len(shown)} command(s); {sum(r.done for r in runs)} of {len(runs)} runs already in {log}",
              file=sys.stderr)
        return 0
    if a.dry_run:
        for r in runs:
            state = "done" if r.done else ("todo" if r.data_ok else "todo (no data folder!)")
            print(f"[{state}] {r.describe()}", file=out)
        n_done = sum(r.done for r in runs)
        print(f"{len(runs)} runs: {n_done} done, {len(runs) - n_done} to run (log {log})", file=out)
        return 0
    if a.launcher != "serial":
        if a.timeout < 1 or a.parallel < 1 or (a.save_steps is not None and a.save_steps < 0):
            print("error: --timeout and --parallel must be >= 1, --save_steps >= 0", file=sys.stderr)
            return 2
        failures = launch_submitit(runs, log, a, out, on_submit)
        return 1 if failures else 0
    failures = run_grid(runs, log, runner, out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
