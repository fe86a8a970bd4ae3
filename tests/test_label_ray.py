"""`robot-stack label run --engine ray`: frames embedded in shards on a real Ray cluster started by the job (2
workers on 127.0.0.1, no dashboard) give exactly the labels and cached embeddings of the single-process run.

Datasets are real Zarr stores on disk; the model is conftest's tiny_clip local folder (random weights, nothing
downloaded: it proves the plumbing, not zero-shot ability), a folder so that Ray's worker processes can load it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from robot_stack.cli.main import main
from robot_stack.data import Dataset, DatasetWriter, FeatureSpec
from robot_stack.errors import LabelError
from robot_stack.label import engine, job
from robot_stack.learn.clip_embed import EMBEDDING, cache_run

CAMERA = FeatureSpec("image.agentview", "uint8", (32, 32, 3), "image")
LENGTHS = [37, 50, 29, 44]  # 160 frames: batches of 16 and shards cut across episodes
TASK = "lift the red cube"


def make_dataset(path: Path) -> Path:
    writer = DatasetWriter.create(path, robot={"name": "arm"}, record_hz=10,
                                  features=[CAMERA, FeatureSpec("action", "float32", (2,), "action")])
    for index, n in enumerate(LENGTHS):
        fields = np.cumsum(np.cumsum(np.random.default_rng(index).normal(size=(n, 32, 32, 3)), axis=1), axis=2)
        writer.append_frames({CAMERA.name: np.clip(fields * 4 + 128, 0, 255).astype(np.uint8),
                              "action": np.zeros((n, 2), np.float32), "timestamp": index * 100 + np.arange(n) / 10})
        writer.commit_episode(TASK, index % 2 == 0)
    writer.close()
    return path


def label(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["label", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def descendants(pid: int) -> set[int]:
    """Every live process started (directly or not) by process `pid`."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError):
                continue  # exited meanwhile
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def listening_hosts(pids: set[int]) -> set[str]:
    """The local addresses (IPv4 or IPv6, as text) on which processes `pids` listen for TCP connections."""
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    hosts = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN
                raw = bytes.fromhex(fields[1].partition(":")[0])
                # /proc writes each 32-bit word of the address in host (little-endian) order
                packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                hosts.add(socket.inet_ntop(family, packed))
    return hosts


@pytest.fixture
def ray_watch(monkeypatch):
    """Real ray.init and ray.shutdown, watched: what init returned and the addresses Ray's processes listened on
    just before shutdown (its workers included)."""
    seen = {"inits": [], "listening": None, "processes": set()}
    real_init, real_shutdown = ray.init, ray.shutdown

    def init(*args, **kwargs):
        seen["inits"].append((kwargs, real_init(*args, **kwargs)))
        return seen["inits"][-1][1]

    def shutdown(*args, **kwargs):
        seen["processes"] = descendants(os.getpid())
        seen["listening"] = listening_hosts(seen["processes"] | {os.getpid()})
        return real_shutdown(*args, **kwargs)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", shutdown)
    return seen


class Killed(Exception):
    """Stands for the job being killed."""


class KilledAfterOneBlock(engine.LocalEngine):
    """The local engine, killed once it has saved its first block of embeddings."""

    def embed(self, ds, work, start, save, progress):
        def save_then_die(first, values):
            save(first, values)
            raise Killed

        return super().embed(ds, work, start, save_then_die, progress)


def test_ray_engine_on_two_local_workers_gives_the_single_process_labels_and_embeddings(tmp_path, tiny_clip, capsys,
                                                                                       ray_watch):
    single, sharded = make_dataset(tmp_path / "single.zarr"), tmp_path / "sharded.zarr"
    shutil.copytree(single, sharded)
    # a local job on the copy was killed after saving frames 0..47: the ray run resumes after them
    with pytest.raises(Killed):
        job.embed_frames(Dataset.open(sharded), CAMERA.name, tiny_clip["folder0"], "cpu", 16, 48, False, print,
                         KilledAfterOneBlock())
    common = ["--labeler", "clip", "--task", TASK, "--model", tiny_clip["folder0"], "--run", "c", "--batch-size", "16",
              "--save-every", "48", "--no-progress"]
    assert label(capsys, "run", single, *common)[0] == 0
    code, _, err = label(capsys, "run", sharded, *common, "--engine", "ray", "--workers", "2")
    assert code == 0, err

    reference, result = Dataset.open(single).read_labels("c"), Dataset.open(sharded).read_labels("c")
    np.testing.assert_array_equal(result.raw, reference.raw)  # same code, same batches: bitwise equal
    np.testing.assert_array_equal(result.reward, reference.reward)
    cache = cache_run(CAMERA.name, tiny_clip["folder0"])
    embedded = Dataset.open(sharded).read_label_array(cache, EMBEDDING)[0]
    np.testing.assert_array_equal(embedded, Dataset.open(single).read_label_array(cache, EMBEDDING)[0])
    assert result.attrs["cost"]["frames_embedded"] == sum(LENGTHS) - 48
    # 112 frames in batches of 16, about 4 shards per worker: 7 shards of one batch
    assert result.attrs["engine"] == {"name": "ray", "address": "local", "workers": 2, "shards": 7,
                                      "nodes": ["127.0.0.1"]}
    assert reference.attrs["engine"] == {"name": "local"}

    # Ray was started by the job for the job: 2 CPUs on 127.0.0.1, no dashboard, listening on loopback only.
    (kwargs, context), = ray_watch["inits"]
    assert kwargs["num_cpus"] == 2 and context.address_info["node_ip_address"] == "127.0.0.1"
    assert not context.dashboard_url and kwargs["include_dashboard"] is False
    assert ray_watch["listening"] and ray_watch["listening"] <= {"127.0.0.1", "::ffff:127.0.0.1"}
    assert not ray.is_initialized()
    assert not ray_watch["processes"] & descendants(os.getpid())  # Ray's processes ended with the job


@pytest.fixture
def ray_head(tmp_path):
    """HOST:PORT of a running one-node Ray cluster (`ray start --head --block`, 2 CPUs, on 127.0.0.1), stopped after."""
    port = free_port()
    env = {**os.environ, **engine.LOOPBACK_ENV}
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false"], env=env, stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "head.log").open("w"), start_new_session=True)
    try:
        while head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        assert head.poll() is None, (tmp_path / "head.log").read_text()
        yield head, f"127.0.0.1:{port}"
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the cluster's processes, in the session started for them
                os.killpg(head.pid, signal.SIGKILL)


def test_ray_engine_with_address_labels_on_the_running_cluster_and_leaves_it_running(tmp_path, tiny_clip, capsys,
                                                                                    ray_head):
    head, address = ray_head
    single, sharded = make_dataset(tmp_path / "single.zarr"), tmp_path / "sharded.zarr"
    shutil.copytree(single, sharded)
    common = ["--labeler", "clip", "--task", TASK, "--model", tiny_clip["folder0"], "--run", "c", "--batch-size", "16",
              "--save-every", "48", "--no-progress"]
    assert label(capsys, "run", single, *common)[0] == 0
    # a user's shell: Ray reads RAY_AUTH_MODE when imported; the cluster's token is in ~/.ray, where `ray start` left it
    job = subprocess.run([sys.executable, "-m", "robot_stack.cli.main", "label", "run", str(sharded), *common,
                          "--engine", "ray", "--address", address, "--workers", "3"], env={**os.environ, "RAY_AUTH_MODE": "token"},
                         capture_output=True, text=True, timeout=300, check=False)
    assert job.returncode == 0, job.stderr
    assert f"--workers 3: 2 used, as the cluster at {address} has 2 CPUs" in job.stderr
    result = Dataset.open(sharded).read_labels("c")
    np.testing.assert_array_equal(result.raw, Dataset.open(single).read_labels("c").raw)
    assert result.attrs["engine"] == {"name": "ray", "address": address, "workers": 2, "shards": 5,
                                      "nodes": ["127.0.0.1"]}
    assert not ray.is_initialized() and head.poll() is None  # disconnected; the cluster is not the job's to stop
    socket.create_connection(("127.0.0.1", int(address.rpartition(":")[2])), timeout=5).close()


def test_ray_engine_starts_no_ray_when_the_embeddings_are_cached(tmp_path, tiny_clip, capsys, ray_watch):
    path = make_dataset(tmp_path / "d.zarr")
    common = ["--labeler", "clip", "--task", TASK, "--model", tiny_clip["folder0"], "--no-progress"]
    assert label(capsys, "run", path, *common, "--run", "first")[0] == 0
    assert label(capsys, "run", path, *common, "--run", "again", "--engine", "ray")[0] == 0
    assert not ray_watch["inits"]
    run = Dataset.open(path).read_labels("again")
    assert run.attrs["cost"]["frames_embedded"] == 0 and run.attrs["engine"]["shards"] == 0
    np.testing.assert_array_equal(run.raw, Dataset.open(path).read_labels("first").raw)


def test_a_worker_that_cannot_open_the_dataset_says_every_worker_needs_it_at_the_same_path(tmp_path, tiny_clip):
    path = make_dataset(tmp_path / "d.zarr")
    work = engine.EmbedWork(str(tmp_path / "elsewhere.zarr"), Dataset.open(path).fingerprint(), CAMERA.name,
                            tiny_clip["folder0"], "cpu", 16, 48)
    with pytest.raises(LabelError, match="cannot open the dataset .*elsewhere.zarr.*same path as this machine") as raised:
        engine.ShardEmbedder(work).embed(0, 16)  # what a worker on a node without the dataset runs
    assert "\n" not in str(raised.value)


def test_a_workers_error_reaches_the_driver_as_one_line_and_ray_is_shut_down(tmp_path, tiny_clip, ray_watch):
    ds = Dataset.open(make_dataset(tmp_path / "d.zarr"))
    # the workers find other data at the dataset's path than the driver checked (another copy, a stale mount)
    work = engine.EmbedWork(str(ds.path), "0" * 64, CAMERA.name, tiny_clip["folder0"], "cpu", 16, 48)
    saved = []
    with pytest.raises(LabelError, match="a Ray worker on .* sees other data at .*d.zarr than this machine") as raised:
        engine.RayEngine(workers=2).embed(ds, work, 0, lambda start, values: saved.append(start), progress=False)
    assert "\n" not in str(raised.value) and not saved
    assert len(ray_watch["inits"]) == 1 and not ray.is_initialized()
    assert ray_watch["processes"] and not ray_watch["processes"] & descendants(os.getpid())


def test_shards_are_whole_batches_on_the_single_process_grid():
    # 138 frames from frame 32 (an interrupted job saved the first 32) on 2 workers, batches of 16
    assert engine.shard_ranges(32, 170, 16, 2, 48) == [(32, 64), (64, 96), (96, 128), (128, 160), (160, 170)]
    # a shard holds at most about --save-every frames (rounded up to whole batches): a lost worker costs little
    assert {last - first for first, last in engine.shard_ranges(0, 1600, 16, 1, 40)} == {48, 1600 % 48}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("extra", "message"), [
    (["--engine", "ray", "--address", "127.0.0.1:{port}"], "cannot reach the Ray cluster at 127.0.0.1:{port}"),
    (["--engine", "ray", "--address", "head-node"], "give the Ray head's HOST:PORT"),
    (["--address", "127.0.0.1:6379"], "--address goes with --engine ray"),
    (["--engine", "ray", "no-ray"], "--engine ray needs Ray, which is not installed: pip install 'robot_stack[ray]'"),
])
def test_bad_engine_requests_are_one_line_errors(tmp_path, tiny_clip, capsys, monkeypatch, ray_watch, extra, message):
    path = make_dataset(tmp_path / "d.zarr")
    if "no-ray" in extra:
        extra = extra[:-1]
        monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    port = free_port()  # nothing listens there
    code, _, err = label(capsys, "run", path, "--labeler", "clip", "--task", TASK, "--model", tiny_clip["folder0"],
                         "--no-progress", *[item.format(port=port) for item in extra])
    assert code == 2 and message.format(port=port) in err and len(err.strip().splitlines()) == 1
    assert not ray_watch["inits"] and not Dataset.open(path).label_runs()
