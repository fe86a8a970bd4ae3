"""What `robot-stack data info` and `validate` report about a dataset: a summary (as a dict for --json,
and as text), and the validation problems with unusable input told apart from a damaged dataset.
"""

from __future__ import annotations

import json
from collections import Counter
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.data.check import validate
from robot_stack.data.dataset import Dataset
from robot_stack.data.schema import UNKNOWN
from robot_stack.data.store import read_root_attrs
from robot_stack.errors import DatasetError


def dataset_info(ds: Dataset) -> dict[str, Any]:
    """A JSON-able summary: counts, durations [s], size [bytes], features, tasks, success, episode sources
    ({source: episodes}, "" = unknown), labels, provenance."""
    table = ds.episode_table()
    success = table["success"]
    attrs = _root_attrs(ds)
    tasks = [{"index": i, "text": text, "episodes": int((table["task"] == i).sum())} for i, text in enumerate(ds.tasks)]
    runs = []
    fingerprint = ds.fingerprint() if ds.label_runs() or ds.label_arrays() else None
    for run in ds.label_runs():
        try:
            labels = ds.read_labels(run)
        except DatasetError as error:
            runs.append({"run": run, "error": str(error)})
            continue
        runs.append({
            "run": run, "labeler": labels.attrs.get("labeler"), "model": labels.attrs.get("model"),
            "created": labels.attrs.get("created"), "n_frames": len(labels.reward),
            "current": labels.attrs.get("dataset_fingerprint") == fingerprint,
        })
    arrays = []
    for run, names in ds.label_arrays().items():
        for name in names:
            try:
                attrs = ds.label_array_attrs(run, name)
            except DatasetError as error:
                arrays.append({"run": run, "name": name, "error": str(error)})
                continue
            arrays.append({"run": run, "name": name, "producer": attrs.get("producer"), "model": attrs.get("model"),
                           "created": attrs.get("created"),
                           "current": attrs.get("dataset_fingerprint") == fingerprint})
    rate = ds.success_rate
    return {
        "path": str(ds.path),
        "schema_version": ds.schema.schema_version,
        "robot": ds.robot,
        "record_hz": ds.record_hz,
        "n_episodes": ds.n_episodes,
        "n_frames": ds.n_frames,
        "frames_duration_s": ds.n_frames / ds.record_hz,
        "episodes_duration_s": float(table["duration"].sum()),
        "episode_length": {"min": int(table["length"].min()), "mean": float(table["length"].mean()),
                           "max": int(table["length"].max())} if ds.n_episodes else None,
        "success": {"succeeded": int((success == 1).sum()), "failed": int((success == 0).sum()),
                    "unknown": int((success == UNKNOWN).sum()), "marked": int(table["marked"].sum())},
        "success_rate": None if math.isnan(rate) else rate,
        "sources": dict(sorted(Counter(table["source"].tolist()).items())),
        "provenance": ds.provenance,
        "size_bytes": ds.size_bytes(),
        "unfinished_frames": ds.unfinished_frames,
        "chunks_read": False,  # info reads metadata only; validate reads every chunk
        "features": [{"name": spec.name, **spec.to_json()} for spec in ds.features.values()],
        "tasks": tasks,
        "episodes_without_task": int((table["task"] == UNKNOWN).sum()),
        "label_runs": runs,
        "label_arrays": arrays,
        "created": attrs.get("created"),
        "created_by": attrs.get("created_by"),
        "provenance": attrs.get("provenance"),
    }


def _root_attrs(ds: Dataset) -> dict[str, Any]:
    return ds._store.root.attrs.asdict()


def provenance(ds: Dataset) -> dict[str, Any] | None:
    """Where the dataset came from (merge, split, an importer), as its root attributes record it."""
    return _root_attrs(ds).get("provenance")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def format_info(info: dict[str, Any]) -> str:
    """The text `robot-stack data info` prints."""
    s = info["success"]
    lengths = info["episode_length"]
    lines = [
        f"dataset    {info['path']}  (robot_stack schema {info['schema_version']}, {_size(info['size_bytes'])} on disk)",
        f"robot      {json.dumps(info['robot'])}",
        f"record_hz  {info['record_hz']:g}",
        f"episodes   {info['n_episodes']}, {info['n_frames']} frames ({_duration(info['frames_duration_s'])} at record_hz; "
        f"episode durations add up to {_duration(info['episodes_duration_s'])})",
    ]
    if lengths:
        lines.append(f"lengths    {lengths['min']} to {lengths['max']} frames, mean {lengths['mean']:.1f}")
    if info["success_rate"] is None:
        lines.append(f"success    unknown for every episode ({s['unknown']})")
    else:
        lines.append(f"success    {info['success_rate']:.0%} of known outcomes ({s['succeeded']} succeeded, "
                     f"{s['failed']} failed, {s['unknown']} unknown)"
                     + (f"; {s['marked']} marked by an operator (robot-stack data mark)" if s["marked"] else ""))
    if info["sources"]:
        lines.append("sources    " + ", ".join(f"{source or 'unknown'} {count}" for source, count in info["sources"].items()))
    origin = _origin(info.get("provenance") or {})
    if origin:
        lines.append(f"origin     {origin}")
    if info["unfinished_frames"]:
        lines.append(f"unfinished {info['unfinished_frames']} frames past the last committed episode (a recording that "
                     f"stopped without commit or discard): run `robot-stack data recover {info['path']} --keep` or `--drop`")
    else:
        lines.append("unfinished none")
    features = info["features"]
    widths = [max([len(h)] + [len(str(row)) for row in col]) for h, col in (
        ("name", [f["name"] for f in features]), ("kind", [f["kind"] for f in features]),
        ("dtype", [f["dtype"] for f in features]), ("shape", [tuple(f["shape"]) for f in features]),
        ("units", [f["units"] for f in features]))]
    lines.append(f"features   {len(features)}")
    header = ("name", "kind", "dtype", "shape", "units", "topic")
    lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  topic")
    for f in features:
        cells = (f["name"], f["kind"], f["dtype"], str(tuple(f["shape"])), f["units"] or "-")
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + (f["topic"] or "-"))
    lines.append(f"tasks      {len(info['tasks'])}" + (f" ({info['episodes_without_task']} episodes without a task)"
                                                      if info["episodes_without_task"] else ""))
    for task in info["tasks"]:
        lines.append(f"  {task['index']}  {task['text']!r}  ({task['episodes']} episodes)")
    lines.append(f"labels     {len(info['label_runs']) or 'none'}")
    for run in info["label_runs"]:
        lines.append(_label_line(run, run["run"], lambda r: f"labeler {r['labeler']}, model {r['model']}",
                                 "computed on other data (the dataset changed since): label again"))
    for array in info["label_arrays"]:
        lines.append(_label_line(array, f"{array['run']}/{array['name']}", lambda a: f"{a['producer']}, model {a['model']}",
                                 "stale (the dataset changed since): recomputed when next used"))
    if info["provenance"]:
        lines.append(f"provenance {', '.join(info['provenance'])}")
    lines.append(f"checked    metadata only, the recorded chunks were not read: run `robot-stack data validate "
                 f"{info['path']}` to read every chunk")
    return "\n".join(lines)


def _label_line(entry: dict[str, Any], name: str, describe: Any, stale: str) -> str:
    """One `data info` line of a label run or label array: what made it and whether it matches the data."""
    if "error" in entry:
        return f"  {name}  {entry['error']}"
    state = "matches the data" if entry["current"] else stale
    return f"  {name}  {describe(entry)}, {entry['created']}; {state}"


def episode_rows(ds: Dataset) -> list[dict[str, Any]]:
    """One dict per committed episode (for `info --episodes`)."""
    rows = []
    for i in range(ds.n_episodes):
        e = ds.episode_info(i)
        rows.append({"index": i, "start": e.start, "stop": e.stop, "length": e.length, "task": e.task_text,
                     "success": e.success, "marked": e.marked, "start_time": e.start_time, "duration": e.duration,
                     "operator": e.operator, "notes": e.notes, "source": e.source})
    return rows


def format_episodes(rows: list[dict[str, Any]]) -> str:
    lines = [f"  {'ep':>4}  {'frames':>7}  {'duration':>9}  {'success':7}  task / notes (source)"]
    for row in rows:
        success = {True: "yes", False: "no", None: "?"}[row["success"]] + (" (m)" if row["marked"] else "")
        extra = (f"  [{row['notes']}]" if row["notes"] else "") + (f"  ({row['source']})" if row["source"] else "")
        lines.append(f"  {row['index']:>4}  {row['length']:>7}  {row['duration']:>8.2f}s  {success:7}  {row['task'] or '-'}{extra}")
    if any(row["marked"] for row in rows):
        lines.append("  (m): outcome marked by an operator (robot-stack data mark), not recorded")
    return "\n".join(lines)


def check(path: str | os.PathLike, progress: bool = True) -> list[str]:
    """validate() for the CLI: raises DatasetError when `path` is not a dataset at all (so there is
    nothing to validate), and returns the problems of a dataset (empty: all good)."""
    read_root_attrs(Path(path))
    return validate(path, progress=progress)


def episode_index(ds: Dataset, episode: int) -> int:
    """A committed episode's index (negative counts from the end), or DatasetError naming the range."""
    if not ds.n_episodes:
        raise DatasetError(f"{ds.path} has no committed episodes")
    if not -ds.n_episodes <= episode < ds.n_episodes:
        raise DatasetError(f"{ds.path} has no episode {episode}: its episodes are 0-{ds.n_episodes - 1}")
    return int(np.arange(ds.n_episodes)[episode])


def _origin(provenance: dict[str, Any]) -> str:
    """One line on where the data came from: an import's format, source and version, sim_collect's task and dynamics,
    or the provenance's keys (`data info --json` has all of it)."""
    if "import" in provenance:
        record = provenance["import"]
        return (f"imported from {record.get('format')} {record.get('source')} (version {record.get('version')}, "
                f"{record.get('episodes')} episodes)")
    if "sim_collect" in provenance:
        record = provenance["sim_collect"]
        return f"sim_collect, task {record.get('task')}, dynamics {record.get('dynamics')}"
    return ", ".join(sorted(provenance))
