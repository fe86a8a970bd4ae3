"""Dataset write and read speed: image frames with and without sharding, low-dim appends, the image loader.

Cases, each side by side in one run:
- image append: 640x480 rgb8 frames (camera-like: gradients, a moving square and sensor noise) appended
  one at a time through DatasetWriter.append_frame and committed as 10 s episodes at 30 Hz; image
  arrays sharded (30 frames a shard, the default) or not (a file per frame), flushed every 1 s (the
  default) or every frame. Reported: frames/s appending as fast as possible (flushes and commits
  included: the writer's capacity), the per-append latency (p50/p99/max, ms) when appending at the
  real 30 Hz as a recorder does (a write the background thread has not finished holds up the append
  that hands it the next buffer), and the stored bytes and files per frame. Each case runs `--rounds` times in alternating order (the disk's
  write-back makes single runs noisy); the median round is reported.
- low-dim append: a 500 Hz frame of joint positions/velocities (7 float32 each), an end-effector pose
  (7 float64), an action (7 float32), a reward and the timestamp; microseconds per append_frame.
- image read: robot_stack.data.loader.TransitionDataset with one camera as observation (two images per
  transition: obs and next_obs), shuffled, batch 64, through torch DataLoader with 0 and 2 workers;
  plus a sequential read of whole episodes (Dataset.episode(...)[camera][:]). Files are in the page
  cache (just written): this measures decoding and Zarr overhead, not the disk.

    python benchmarks/dataset_io.py            # 600 image frames, 100000 low-dim frames
    python benchmarks/dataset_io.py --quick    # fewer frames, for a smoke run

Prints a table and writes benchmarks/results/dataset_io.json.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine, write_result  # a script's own folder is sys.path[0]

from robot_stack.data import Dataset, DatasetWriter, FeatureSpec

RESULTS = Path(__file__).resolve().parent / "results" / "dataset_io.json"
H, W = 480, 640
RECORD_HZ = 30.0


def camera_frames(count: int, seed: int = 0) -> np.ndarray:
    """`count` distinct camera-like rgb8 frames [count, H, W, 3] (cycled through when writing)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = np.empty((count, H, W, 3), np.uint8)
    for i in range(count):
        image = np.stack([xx * 255 / W, yy * 255 / H, (xx + yy + 8 * i) % 256], -1)
        x0, y0 = 40 + 13 * i % 400, 60 + 7 * i % 300
        image[y0 : y0 + 120, x0 : x0 + 160] = (200, 40, 40)
        frames[i] = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return frames


def image_append(path: Path, n_frames: int, shard: int, flush_interval_s: float, frames: np.ndarray, paced: bool) -> dict:
    writer = DatasetWriter.create(
        path, robot={"name": "bench"}, record_hz=RECORD_HZ, flush_interval_s=flush_interval_s, image_shard_frames=shard,
        features=[FeatureSpec("cam", "uint8", (H, W, 3), "image"), FeatureSpec("joint_pos", "float32", (7,), "state")],
    )
    episode = int(10 * RECORD_HZ)
    latency = np.empty(n_frames)
    joint = np.zeros(7, np.float32)
    start = time.perf_counter()
    for i in range(n_frames):
        if paced:
            time.sleep(max(0.0, start + i / RECORD_HZ - time.perf_counter()))
        t0 = time.perf_counter()
        writer.append_frame({"cam": frames[i % len(frames)], "joint_pos": joint, "timestamp": i / RECORD_HZ})
        latency[i] = time.perf_counter() - t0
        if (i + 1) % episode == 0:
            writer.commit_episode("bench", True)
    if writer.episode_frames:
        writer.commit_episode("bench", True)
    writer.close()
    elapsed = time.perf_counter() - start
    files = sum(len(names) for _, _, names in os.walk(path / "data" / "cam"))
    size = sum(entry.stat().st_size for entry in (path / "data" / "cam").rglob("*") if entry.is_file())
    return {
        "path": str(path), "shard_frames": shard, "flush_interval_s": flush_interval_s, "frames": n_frames,
        "frames_per_s": n_frames / elapsed,
        "append_ms_p50": 1e3 * float(np.percentile(latency, 50)), "append_ms_p99": 1e3 * float(np.percentile(latency, 99)),
        "append_ms_max": 1e3 * float(latency.max()),
        "stored_kb_per_frame": size / n_frames / 1e3, "raw_kb_per_frame": H * W * 3 / 1e3, "files_per_100_frames": 100 * files / n_frames,
    }


def low_dim_append(folder: Path, n_frames: int) -> dict:
    features = [
        FeatureSpec("joint_pos", "float32", (7,), "state", units="rad"),
        FeatureSpec("joint_vel", "float32", (7,), "state", units="rad/s"),
        FeatureSpec("eef_pose", "float64", (7,), "state"),
        FeatureSpec("action", "float32", (7,), "action"),
        FeatureSpec("reward", "float32", (), "reward"),
    ]
    writer = DatasetWriter.create(folder / "low_dim.zarr", robot={"name": "bench"}, record_hz=500.0, features=features)
    rng = np.random.default_rng(0)
    values = {spec.name: rng.normal(size=(64, *spec.shape)).astype(spec.dtype) for spec in features}
    latency = np.empty(n_frames)
    start = time.perf_counter()
    for i in range(n_frames):
        frame = {name: value[i % 64] for name, value in values.items()} | {"timestamp": i / 500.0}
        t0 = time.perf_counter()
        writer.append_frame(frame)
        latency[i] = time.perf_counter() - t0
        if (i + 1) % 5000 == 0:
            writer.commit_episode("bench", True)
    elapsed = time.perf_counter() - start
    return {"frames": n_frames, "record_hz": 500.0, "us_per_frame_mean": 1e6 * float(latency.mean()),
            "us_per_frame_p50": 1e6 * float(np.percentile(latency, 50)), "us_per_frame_p99": 1e6 * float(np.percentile(latency, 99)),
            "max_ms": 1e3 * float(latency.max()), "frames_per_s_loop": n_frames / elapsed}


def image_read(path: str, workers: int, batches: int) -> dict:
    import torch

    from robot_stack.data.loader import TransitionDataset

    dataset = TransitionDataset(path, obs=["cam", "joint_pos"], action="joint_pos")
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=False)
    images, start, first, seen = 0, time.perf_counter(), None, 0
    while seen <= batches:  # as many epochs as it takes
        for batch in loader:
            if first is None:
                first, start = time.perf_counter() - start, time.perf_counter()  # worker start-up excluded
            else:
                images += 2 * len(batch["reward"])
            seen += 1
            if seen > batches:
                break
    elapsed = time.perf_counter() - start
    return {"workers": workers, "batch": 64, "images_per_s": images / elapsed, "first_batch_s": first}


def episode_read(path: str) -> dict:
    ds = Dataset.open(path)
    start, frames = time.perf_counter(), 0
    for index in range(ds.n_episodes):
        frames += len(ds.episode(index)["cam"][:])
    return {"frames_per_s": frames / (time.perf_counter() - start)}


def print_table(results: dict) -> None:
    print(f"\nimage append, {W}x{H} rgb8 at {RECORD_HZ:g} Hz")
    print(f"{'shard':>6} {'flush s':>8} {'frames/s':>9} | at 30 Hz: {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} | {'kB/frame':>9} {'files/100':>9}")
    for case in results["image_append"]:
        paced = case["paced"]
        print(f"{case['shard_frames']:>6} {case['flush_interval_s']:>8.3g} {case['frames_per_s']:>9.1f} | {'':9} {paced['append_ms_p50']:>7.2f} "
              f"{paced['append_ms_p99']:>7.1f} {paced['append_ms_max']:>7.1f} | {case['stored_kb_per_frame']:>9.0f} {case['files_per_100_frames']:>9.1f}")
    low = results["low_dim_append"]
    print(f"\nlow-dim append at 500 Hz: {low['us_per_frame_mean']:.1f} us/frame mean, p50 {low['us_per_frame_p50']:.1f} us, "
          f"p99 {low['us_per_frame_p99']:.1f} us, max {low['max_ms']:.1f} ms")
    print("\nimage read (TransitionDataset, 2 images per transition, batch 64, shuffled)")
    for case in results["image_read"]:
        print(f"  shard {case['shard_frames']:>3}, {case['workers']} workers: {case['images_per_s']:8.1f} images/s")
    for case in results["episode_read"]:
        print(f"  shard {case['shard_frames']:>3}, whole episodes in order: {case['frames_per_s']:8.1f} frames/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer frames (smoke run)")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--rounds", type=int, default=3, help="runs of each image append case (default: %(default)s)")
    args = parser.parse_args()
    n_images, n_paced, n_low, batches = (120, 90, 20000, 5) if args.quick else (600, 300, 100000, 20)
    frames = camera_frames(16)
    results: dict = {
        "benchmark": "dataset_io",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **machine(["zarr", "numpy", "torch", "robot_stack"]),
        "settings": {"quick": args.quick, "image_frames": n_images, "paced_frames": n_paced, "low_dim_frames": n_low, "read_batches": batches, "rounds": args.rounds},
        "image_append": [], "low_dim_append": None, "image_read": [], "episode_read": [],
    }
    with tempfile.TemporaryDirectory(prefix="dataset_io_", dir=os.environ.get("BENCH_DIR")) as tmp:
        folder = Path(tmp)
        cases = ((30, 1.0), (1, 1.0), (30, 1 / RECORD_HZ), (1, 1 / RECORD_HZ))
        rounds: dict = {case: [] for case in cases}
        for round_ in range(args.rounds):
            for shard, flush in cases[:: 1 if round_ % 2 == 0 else -1]:
                print(f"image append: shard {shard}, flush every {flush:.3g} s, round {round_ + 1} ...", file=sys.stderr, flush=True)
                path = folder / f"images_shard{shard}_flush{flush:.3g}_{round_}.zarr"
                rounds[(shard, flush)].append(image_append(path, n_images, shard, flush, frames, paced=False))
        paths = {}
        for case, runs in rounds.items():
            median = sorted(runs, key=lambda run: run["frames_per_s"])[len(runs) // 2]
            print(f"image append at 30 Hz: shard {case[0]}, flush every {case[1]:.3g} s ...", file=sys.stderr, flush=True)
            paced = image_append(folder / f"paced_{case[0]}_{case[1]:.3g}.zarr", n_paced, case[0], case[1], frames, paced=True)
            results["image_append"].append(median | {"frames_per_s_rounds": [run["frames_per_s"] for run in runs], "paced": paced})
            paths.setdefault(case[0], median["path"])
        print("low-dim append ...", file=sys.stderr, flush=True)
        results["low_dim_append"] = low_dim_append(folder, n_low)
        for shard, path in paths.items():
            for workers in (0, 2):
                print(f"image read: shard {shard}, {workers} workers ...", file=sys.stderr, flush=True)
                results["image_read"].append({"shard_frames": shard, **image_read(path, workers, batches)})
            results["episode_read"].append({"shard_frames": shard, **episode_read(path)})
    print_table(results)
    out = Path(args.output)
    write_result(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
