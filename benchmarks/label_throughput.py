"""Labeling throughput: frames/s a CLIP image tower embeds from a Zarr dataset, end to end, batched with
prefetch (robot_stack) against a naive per-frame loop.

    python benchmarks/label_throughput.py                          # ViT-B-32, random weights, on the CPU
    python benchmarks/label_throughput.py --device cuda            # on a GPU
    python benchmarks/label_throughput.py --frames 128 --naive-frames 32 --rounds 1   # a quick look

Both sides start from the same recorded dataset (uint8 camera frames, one zstd-compressed chunk each, as the
recorder writes them) and end with L2-normalised float32 embeddings of every frame:

- robot_stack: ``robot_stack.learn.clip_embed.clip_embeddings`` - a reader thread decodes the next batch from
  Zarr while the model encodes this one, tensor preprocessing of the whole batch (resize, crop, normalise),
  one ``encode_image`` per batch (--batch-size), the embeddings written to the dataset's labels cache (removed
  before each round, so every round computes). On CUDA the images go to the GPU as uint8 and are
  preprocessed there.
- naive: what a first script does - for each frame, read it from Zarr, PIL + open_clip's own preprocessing
  transform, ``encode_image`` on a batch of one, ``.cpu()``.

Random weights are fine for speed (no download): the checkpoint is made here. Rounds alternate between the
two, so load on a shared machine hits both alike; the figure is the ratio. Prints a table and writes
benchmarks/results/label_throughput.json. Goal (issue 14): >= 5x the naive loop on the CPU; >= 3,000 frames/s
on an H100.
"""

from __future__ import annotations

import argparse
import os
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine, write_result  # a script's own folder is sys.path[0]

RESULTS = Path(__file__).resolve().parent / "results" / "label_throughput.json"
FEATURE = "image.agentview"


def make_dataset(path: Path, frames: int, size: int, seed: int) -> None:
    """A dataset of `frames` camera-like frames (smooth random fields), episodes of 64 frames."""
    from robot_stack.data import DatasetWriter, FeatureSpec

    rng = np.random.default_rng(seed)
    features = [FeatureSpec(FEATURE, "uint8", (size, size, 3), "image", topic="/camera/agentview/image_raw"),
                FeatureSpec("action", "float32", (2,), "action")]
    with DatasetWriter.create(path, robot={"name": "benchmark"}, record_hz=20.0, features=features) as writer:
        for start in range(0, frames, 64):
            n = min(64, frames - start)
            coarse = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.float32)
            images = np.repeat(np.repeat(coarse, size // 8 + 1, axis=1), size // 8 + 1, axis=2)[:, :size, :size]
            writer.append_frames({FEATURE: images.astype(np.uint8), "action": np.zeros((n, 2), np.float32),
                                  "timestamp": start / 20.0 + np.arange(n) / 20.0})
            writer.commit_episode("benchmark", success=True)


def naive_embed(ds, model, transform, device, n: int) -> np.ndarray:
    import torch
    from PIL import Image
    from torch.nn import functional as F

    out = []
    with torch.inference_mode():
        for i in range(n):
            frame = ds.frames(FEATURE, i, i + 1)[0]
            x = transform(Image.fromarray(frame)).unsqueeze(0).to(device)
            out.append(F.normalize(model.encode_image(x).float(), dim=-1).cpu().numpy())
    return np.concatenate(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda")
    parser.add_argument("--frames", type=int, default=None, help="frames robot_stack embeds per round "
                        "(default 512 CPU, 8192 CUDA)")
    parser.add_argument("--naive-frames", type=int, default=None, help="frames the naive loop embeds per round "
                        "(default 64 CPU, 1024 CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="robot_stack's batch (default 64 CPU, 256 CUDA)")
    parser.add_argument("--size", type=int, default=96, help="recorded frame size [px], square")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import open_clip
    import torch

    from robot_stack.data import Dataset
    from robot_stack.learn.clip_embed import cache_run, clip_embeddings

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    frames = args.frames or (8192 if cuda else 512)
    naive_frames = min(frames, args.naive_frames or (1024 if cuda else 64))
    batch_size = args.batch_size or (256 if cuda else 64)
    facts = machine(["numpy", "torch", "open_clip_torch", "zarr"], device=str(device),
                    torch_threads=torch.get_num_threads())
    print(f"{args.arch} (random weights) on {device}, {torch.get_num_threads()} threads; {frames} frames of "
          f"{args.size}x{args.size} (naive loop: {naive_frames}), batch {batch_size}, "
          f"load average {facts['machine']['load_average'][0]}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="label_throughput-"))
    try:
        torch.manual_seed(args.seed)
        model, _, transform = open_clip.create_model_and_transforms(args.arch, device=device)
        model.eval().requires_grad_(False)
        checkpoint = work / "random.pt"
        torch.save(model.state_dict(), checkpoint)
        model_string = f"{args.arch}:{checkpoint}"
        path = work / "frames.zarr"
        make_dataset(path, frames, args.size, args.seed)
        ds = Dataset.open(path)
        run = cache_run(FEATURE, model_string)

        def batched() -> np.ndarray:
            if (path / "labels" / run).exists():
                shutil.rmtree(path / "labels" / run)  # every round computes: no cached embeddings
            return clip_embeddings(Dataset.open(path), FEATURE, model_string, device=device,
                                   batch_size=batch_size, progress=False)

        # Warm-up (allocator, kernels) and the check that both sides compute the same embeddings.
        reference = batched()
        naive = naive_embed(ds, model, transform, device, min(8, naive_frames))
        cosine = float((reference[: len(naive)] * naive).sum(axis=1).min())
        print(f"check: cosine of robot_stack's and the naive loop's embeddings of the same frames >= {cosine:.4f} "
              f"(tensor vs PIL resizing differ by a grey level or two)", flush=True)

        seconds = {"robot_stack": [], "naive": []}
        for _ in range(args.rounds):
            for name, run_case, n in (("robot_stack", batched, frames),
                                      ("naive", lambda: naive_embed(ds, model, transform, device, naive_frames),
                                       naive_frames)):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                run_case()
                if cuda:
                    torch.cuda.synchronize()
                seconds[name].append((time.perf_counter() - start) / n)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rates = {name: 1.0 / float(np.median(values)) for name, values in seconds.items()}
    ratio = rates["robot_stack"] / rates["naive"]
    print(f"{'case':12s} {'frames/s':>10s} {'spread':>7s}")
    for name, values in seconds.items():
        print(f"{name:12s} {rates[name]:10.1f} {max(values) / min(values):7.2f}")
    print(f"ratio robot_stack / naive: {ratio:.2f} (goal >= 5 on the CPU); frames/s goal on an H100: >= 3000")
    result = {
        "benchmark": "label_throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        **facts,
        "settings": {"arch": args.arch, "weights": "random", "frames": frames, "naive_frames": naive_frames,
                     "batch_size": batch_size, "frame_size": args.size, "rounds": args.rounds, "seed": args.seed},
        "check": {"min_cosine": cosine},
        "frames_per_s": rates,
        "seconds_per_frame_by_round": seconds,
        "ratio": ratio,
        "goals": {"cpu_ratio": 5.0, "h100_frames_per_s": 3000},
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    write_result(RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
