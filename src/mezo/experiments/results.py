"""The result log: one JSON object per finished run, appended under a file lock.

Grids launch dozens of runs that share one `log`, so a record is written as one whole line in
one write, flushed and fsynced, under `<log>.lock`; nothing ever rewrites the file. Readers
also accept the original code's dict-repr lines (parsed without eval) and skip damaged lines
with a warning that names the line.
"""
import ast
import dataclasses
import datetime
import enum
import json
import math
import os
import re
import sys
import tempfile

from filelock import FileLock

from mezo.errors import RecordNotAppended


def json_safe(value):
    """Arguments as plain JSON values: enums by value, devices and paths as strings."""
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def args_dict(*groups) -> dict:
    out = {}
    for g in groups:
        for f in dataclasses.fields(g):
            if f.name.startswith("_") or f.name in ("eval_strategy", "evaluation_strategy"):
                continue
            out[f.name] = json_safe(getattr(g, f.name))
    return out


def make_record(task_name, output_dir, dev_metrics, test_metrics, arg_groups, extra=None) -> dict:
    """Keys as in the reference: `<task>_dev_eval_acc`, `<task>_test_eval_acc`, ..., then every argument."""
    rec = {"time": str(datetime.datetime.now()), "output_dir": output_dir}
    for split, metrics in (("dev", dev_metrics), ("test", test_metrics)):
        for key, value in (metrics or {}).items():
            rec[f"{task_name}_{split}_{key}"] = json_safe(value)
    rec.update(args_dict(*arg_groups))
    rec["task_name"] = task_name
    rec.update(json_safe(extra or {}))
    return rec


def append_record(path: str, record: dict) -> None:
    line = json.dumps(record, allow_nan=False) + "\n"
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with FileLock(path + ".lock"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = line.encode()
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)


RECORD_FILE = "record.json"
# Record fields that may differ between an uninterrupted run and a killed-and-resumed one (timings,
# paths, the resume flag itself); every other field of a resumed run's record is the same.
VOLATILE_FIELDS = frozenset({"time", "output_dir", "wall_time_s", "train_steps_per_s", "startup_s",
                             "peak_memory_bytes", "resume_from_checkpoint", "save_total_limit", "log_file"})


def save_record(log_file: str, record: dict, output_dir: str) -> str:
    """Append `record` to the log; if that fails, keep it next to the run's outputs and raise with its path.

    run.py checks the log before training (run.check_paths), but disks fill up and permissions
    change during a long run: the record of a finished run must not be lost with them."""
    try:
        append_record(log_file, record)
        return log_file
    except OSError as e:
        why = f"{type(e).__name__}: {e.strerror or e}"
    line = json.dumps(record, allow_nan=False) + "\n"
    for folder in (output_dir, tempfile.gettempdir()):
        path = os.path.join(folder, RECORD_FILE)
        if folder != output_dir:
            path = os.path.join(folder, f"record-{os.getpid()}-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
        try:
            os.makedirs(folder, exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError:
            continue
        raise RecordNotAppended(f"--log_file {log_file}: the record could not be appended ({why}); it is saved "
                                f"in {path} (add it with: cat {path} >> {log_file})")
    sys.stdout.write(line)
    sys.stdout.flush()
    raise RecordNotAppended(f"--log_file {log_file}: the record could not be appended ({why}) nor saved in "
                            f"{output_dir} or {tempfile.gettempdir()}; it is printed on stdout above")


_ENUM = re.compile(r"<([^<>]*)>")
_DEVICE = re.compile(r"device\(type='([^']*)'(?:, index=(\d+))?\)")


def parse_line(line: str) -> dict:
    """A JSON record, or an original dict-repr line (enums `<...>`, `inf`, `nan`, `device(...)`)."""
    line = line.strip()
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        text = _DEVICE.sub(lambda m: repr(m.group(1) + (":" + m.group(2) if m.group(2) else "")), line)
        text = _ENUM.sub(lambda m: repr(m.group(1)), text)
        text = re.sub(r"(?<=[\s:\[,(])-inf(?=[,}\])])", "-1e999", text)
        text = re.sub(r"(?<=[\s:\[,(])inf(?=[,}\])])", "1e999", text)
        text = re.sub(r"(?<=[\s:\[,(])nan(?=[,}\])])", "None", text)
        rec = ast.literal_eval(text)
    if not isinstance(rec, dict):
        raise ValueError("not a record")
    return rec


def read_records(path: str, warn=True):
    """All parseable records of a log, in order; damaged lines skipped with a warning."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(parse_line(line))
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                if warn:
                    print(f"warning: {path}:{lineno}: damaged record skipped", file=sys.stderr)
    return records


def peak_memory_bytes(device) -> int:
    """Peak accelerator memory (CUDA) or peak resident set size of this process (CPU)."""
    import torch
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


__all__ = ["make_record", "append_record", "save_record", "RecordNotAppended", "read_records", "parse_line",
           "json_safe", "peak_memory_bytes"]
