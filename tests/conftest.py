"""Every test runs loopback-only: LOCALHOST discovery, its own DDS domain and discovery tag."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Set before anything imports robot_stack.ros, and inherited by every subprocess a test starts.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 200)))
os.environ.setdefault("ROBOT_STACK_DDS_TAG", f"pytest-{uuid.uuid4().hex[:12]}")
os.environ.setdefault("ROBOT_STACK_ROS_BACKEND", "dds")
os.environ.setdefault("PYTHONUNBUFFERED", "1")
# Headless rendering: EGL on a GPU machine, OSMesa (Debian libosmesa6) on the CPU.
os.environ.setdefault("MUJOCO_GL", "egl" if os.path.exists("/dev/nvidia0") else "osmesa")

# Test modules bring in MuJoCo and torch in any order; triton (torch's) must load before OSMesa (robot_stack.native).
from robot_stack.native import load_triton_before_osmesa

load_triton_before_osmesa()


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop a node or launch the way Ctrl-C does (SIGINT, so it shuts down and its outputs are closed), and kill it
    if it has not exited after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def fresh_dds_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses that must see each other and nothing else: new domain and tag."""
    env = dict(os.environ)
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(random.randint(1, 200)),
        ROBOT_STACK_DDS_TAG=f"pytest-{uuid.uuid4().hex[:12]}",
        ROBOT_STACK_ROS_BACKEND="dds",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: the networks are tiny, and two threads fighting over the 2 shared cores are
    slower than one (use with pytestmark = pytest.mark.usefixtures("one_torch_thread"))."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def dds_env(monkeypatch) -> dict[str, str]:
    """A fresh loopback domain and tag, applied to this process too (for in-process nodes)."""
    env = fresh_dds_env()
    for key in ("ROS_DOMAIN_ID", "ROBOT_STACK_DDS_TAG", "ROBOT_STACK_ROS_BACKEND"):
        monkeypatch.setenv(key, env[key])
    return env


@pytest.fixture
def ros_session(monkeypatch):
    """Initialise the node layer for one test on the backend named by the test, and always shut it down."""
    from robot_stack import ros

    def start(backend: str = "inproc", args: list[str] | None = None):
        monkeypatch.setenv("ROBOT_STACK_ROS_BACKEND", backend)
        ros.init(list(args or []))
        return ros

    yield start
    ros.shutdown()


PYTHON = sys.executable


TINY_CLIP_ARCH = "robot-stack-test-tiny-clip"
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> dict[str, str]:
    """Model strings of two tiny open_clip CLIPs (random weights, nothing downloaded): 'checkpoint0' and
    'checkpoint1' (TINY_CLIP_ARCH:/path.pt, the architecture added to open_clip in this process), and
    'folder0' (a local model folder with checkpoint0's weights, usable from a subprocess too)."""
    import json

    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("clip")
    (folder / f"{TINY_CLIP_ARCH}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder / f"{TINY_CLIP_ARCH}.json")
    models = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(open_clip.create_model(TINY_CLIP_ARCH).state_dict(), folder / f"tiny{seed}.pt")
        models[f"checkpoint{seed}"] = f"{TINY_CLIP_ARCH}:{folder / f'tiny{seed}.pt'}"
    model_dir = folder / "tiny0_dir"
    model_dir.mkdir()
    (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    torch.save(torch.load(folder / "tiny0.pt"), model_dir / "open_clip_pytorch_model.bin")
    models["folder0"] = str(model_dir)
    return models


TUNED_CLIP_CAPTIONS = ("the arm is far from the target", "the arm is near the target", "the arm is at the target")


@pytest.fixture(scope="session")
def tuned_clip(tmp_path_factory, tiny_clip) -> dict[str, str]:
    """A recorded reach2d dataset with a top camera ('dataset': copy it before writing labels) and a local model
    folder ('model') of the tiny CLIP briefly fine-tuned on its frames with templated captions: each frame is
    captioned TUNED_CLIP_CAPTIONS[k] by the tercile k of its sim_reward, and both towers learn to match frames
    to captions (cross-entropy over the three captions, CLIP's logit scale). This proves the labeling plumbing
    on a model that has seen these frames; it says nothing about zero-shot ability."""
    import json

    import numpy as np
    import open_clip
    import torch
    from robot_stack.sim import collect as sim_collect
    from torch.nn import functional as F

    from robot_stack.learn.clip_embed import BatchPreprocess

    folder = tmp_path_factory.mktemp("tuned_clip")
    ds = sim_collect.collect("reach2d", folder / "reach2d.zarr", 10, mix={"expert": 0.5, "random": 0.5}, seed=5,
                             horizon=30, cameras=["top:24x32"], progress=False)
    reward = ds.frames("sim_reward")
    captions = torch.from_numpy(np.digitize(reward, np.percentile(reward, [100 / 3, 200 / 3])))
    arch, _, checkpoint = tiny_clip["checkpoint0"].partition(":")
    model = open_clip.create_model(arch, pretrained=checkpoint)
    images = BatchPreprocess(model.visual.preprocess_cfg)(torch.from_numpy(ds.frames("image.top")))
    tokens = open_clip.get_tokenizer(arch)(list(TUNED_CLIP_CAPTIONS))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model.train()
    for _ in range(150):
        batch = torch.randint(0, len(images), (64,), generator=generator)
        image = F.normalize(model.encode_image(images[batch]), dim=-1)
        text = F.normalize(model.encode_text(tokens), dim=-1)
        loss = F.cross_entropy(model.logit_scale.exp() * image @ text.T, captions[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model_dir = folder / "model"
    model_dir.mkdir()
    (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    torch.save(model.state_dict(), model_dir / "open_clip_pytorch_model.bin")
    return {"dataset": str(folder / "reach2d.zarr"), "model": str(model_dir)}


@pytest.fixture(scope="session")
def reach2d_runs(tmp_path_factory):
    """A small reach2d dataset (3 expert episodes, a 32x32 top camera) and tiny training runs on it:
    ``train(algo, *flags) -> run folder``, each set of arguments trained once per session with the real
    `robot-stack train` (20 updates, hidden [16], CPU, no sim evaluation). ``train.dataset`` is the dataset."""
    from robot_stack.sim.collect import collect

    from robot_stack.cli.main import main as cli

    folder = tmp_path_factory.mktemp("reach2d_runs")
    dataset = collect("reach2d", folder / "reach2d.zarr", 3, mix={"expert": 1.0}, seed=0, cameras=["top:32x32"],
                      progress=False)
    runs: dict[tuple[str, ...], Path] = {}

    def train(algo: str, *flags: str) -> Path:
        key = (algo, *flags)
        if key not in runs:
            out = folder / f"{algo}{len(runs)}"
            reward = ["--reward", "none"] if algo == "bc" else ["--reward", "sim"]
            code = cli(["train", "--algo", algo, "--dataset", str(dataset.path), "--steps", "20", "--batch-size", "16",
                        "--eval-every", "-1", "--device", "cpu", "--out", str(out), "--no-progress",
                        "--set", "hidden_dims=[16]", *reward, *flags])
            assert code == 0, f"training {key} failed"
            runs[key] = out
        return runs[key]

    train.dataset = dataset
    return train


@pytest.fixture(scope="session")
def reach_pixels(tmp_path_factory):
    """12 recorded reach2d episodes of mixed skill (successful and failed), a 32x32 top camera, sim ground truth:
    the dataset the frame labelers' tests (progress, success, vs shuffled) share, collected once per session.
    Tests may add label runs to it; none changes its frames or outcomes."""
    from robot_stack.sim.collect import collect

    path = tmp_path_factory.mktemp("reach_pixels") / "reach.zarr"
    ds = collect("reach2d", path, 12, mix={"expert": 0.5, "medium": 0.25, "random": 0.25}, seed=0,
                 cameras=["top:32x32"], progress=False)
    assert 3 <= (ds.success == 1).sum() <= 9
    return ds
