"""Policy latency: one inference of an exported policy in onnxruntime (robot_stack.deploy.runtime.OnnxPolicy, as the
policy node runs it) against the same network in eager PyTorch; and, end to end, observation -> command through
the policy node over DDS (end_to_end below).

    python benchmarks/policy_latency.py                        # CPU: the 2x256 MLP and the 84x84 image policy
    python benchmarks/policy_latency.py --device cuda          # also the CUDA EP (I/O binding, batch 1) and torch on CUDA
    python benchmarks/policy_latency.py --calls 2000 --rounds 1 --policies mlp   # a quick look

The policies are built as robot-stack export builds them (robot_stack.deploy.export.ExportedPolicy: normalisation,
a bc actor with 2x256 hidden layers, the command scaling, and for the image policy the project's CNN encoder of an
84x84 camera), exported with the same settings (export.OPSET, a dynamic batch axis) and written with a model card
(export.write_model); state: lift's 32 values (joints, their velocities, end-effector and object pose), command: 7.

What is timed, per call, with a batch of one (perf_counter_ns around the call):

- onnxruntime: ``OnnxPolicy(model)(inputs)``, inputs checked and a float64 command returned, as the node calls
  it: 1 intra-op thread (the default), 2 threads, and the I/O binding path on the CPU; ``session.run`` alone shows
  what OnnxPolicy's checks add.
- torch eager: ``graph(torch.from_numpy(state))`` under inference_mode, the same weights, torch set to 1 thread
  (as onnxruntime's default; both then use one core), the output copied back to numpy.

Calls run in --rounds rounds that alternate between the cases, so a load spike on a shared machine hits them
alike; the load average before and after is recorded. Figures: p50/p99/p99.9 [ms] and the ratio torch / onnxruntime
(above 1: onnxruntime is faster). Goal on the CPU: onnxruntime p99 < 0.2 ms for the MLP. Prints a table and writes
benchmarks/results/policy_latency.json.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from _machine import machine, write_result  # a script's own folder is sys.path[0]

RESULTS = Path(__file__).resolve().parent / "results" / "policy_latency.json"
STATE = {"joint_position": [9], "joint_velocity": [9], "eef_pose": [7], "object_pose": [7]}  # lift's state, 32 values
COMMAND_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
IMAGE = {"image.front": [84, 84, 3]}
MLP_GOAL_P99_MS = 0.2
CALLS = {"mlp": 6000, "image": 600}  # per case on the CPU, about 2 s of calls each on a 2-core machine
PERCENTILES = {"p50_ms": 50, "p99_ms": 99, "p99.9_ms": 99.9}


def build_policy(folder: Path, kind: str) -> tuple[Path, torch.nn.Module, dict[str, np.ndarray]]:
    """An exported-style policy written with its card: (model path, the torch graph, one observation)."""
    from robot_stack.deploy.card import CARD_FORMAT, CARD_VERSION, ModelCard
    from robot_stack.deploy.export import OPSET, ExportedPolicy, write_model
    from robot_stack.learn.algorithms import algorithm_class
    from robot_stack.learn.config import load_config
    from robot_stack.learn.observations import ObservationSpec

    images = IMAGE if kind == "image" else {}
    size = sum(shape[0] for shape in STATE.values())
    rng = np.random.default_rng(0)
    spec = ObservationSpec(state=dict(STATE), mean=rng.normal(size=size).tolist(), std=rng.uniform(0.5, 2, size).tolist(),
                           images=dict(images), action_low=[-1.0] * 7, action_high=[1.0] * 7, action_names=COMMAND_NAMES)
    torch.manual_seed(0)
    config = load_config("bc", steps=1, device="cpu", hidden_dims=[256, 256])
    graph = ExportedPolicy(algorithm_class("bc")(spec, config, torch.device("cpu")), spec).eval()
    names = ["state", *images]
    example = (torch.zeros(2, size), *[torch.zeros(2, *shape, dtype=torch.uint8) for shape in images.values()])
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, example, buffer, input_names=names, output_names=["command"], opset_version=OPSET,
                          dynamic_axes={name: {0: "batch"} for name in [*names, "command"]}, dynamo=False)
    inputs = {"state": [size], **images}
    card = {"format": f"{CARD_FORMAT}/{CARD_VERSION}", "name": f"latency_{kind}",
            "robot": {"name": "benchmark", "command": "eef_delta_pose_gripper"},
            "observation": {"spec": spec.to_json(), "features": {}, "inputs": inputs, "max_age_s": 0.25},
            "command": {"names": COMMAND_NAMES, "low": [-1.0] * 7, "high": [1.0] * 7, "hold": [0.0] * 7,
                        "meaning": "eef_delta_pose_gripper", "rate_hz": 20.0, "sticky": ["gripper"]},
            "algorithm": "bc", "config": {}, "runtime": {"intra_op_threads": 1, "providers": ["CPUExecutionProvider"],
                                                         "inputs": list(inputs), "output": "command"},
            # No run behind it: the provenance fields are there, empty.
            "dataset": {"path": None, "fingerprint": None, "episodes": 0, "frames": 0},
            "reward": {"source": "none", "label_run": None},
            "training": {"steps": 0, "run_dir": None, "checkpoint": None, "checkpoint_sha256": None},
            "parity": {"max_abs_error": None, "cosine": None, "observations": 0}}
    path = folder / f"latency_{kind}.onnx"
    write_model(path, buffer.getvalue(), ModelCard(card))
    observation = {"state": rng.normal(size=size).astype(np.float32)}
    observation |= {name: rng.integers(0, 256, shape, dtype=np.uint8) for name, shape in images.items()}
    return path, graph, observation


def cases_for(path: Path, graph: torch.nn.Module, observation: dict[str, np.ndarray],
              device: str) -> dict[str, Callable[[], Any]]:
    """Name -> a call doing one inference of `observation` (batch of one)."""
    from robot_stack.deploy.runtime import OnnxPolicy

    cases: dict[str, Callable[[], Any]] = {}
    if device == "cpu":
        policy = OnnxPolicy(path)
        session, feeds = policy.session, {name: value[None] for name, value in observation.items()}
        cases["ort 1 thread"] = lambda: policy(observation)
        cases["ort session.run"] = lambda: session.run(["command"], feeds)
        two = OnnxPolicy(path, threads=2)
        cases["ort 2 threads"] = lambda: two(observation)
        bound = OnnxPolicy(path, io_binding=True)
        cases["ort io_binding"] = lambda: bound(observation)
        tensors = [torch.from_numpy(observation["state"])]
        tensors += [torch.from_numpy(value) for name, value in observation.items() if name != "state"]

        def eager() -> np.ndarray:
            with torch.inference_mode():
                return graph(*[t[None] for t in tensors]).numpy()

        cases["torch eager"] = eager
        return cases
    policy = OnnxPolicy(path, device="cuda")
    cases["ort cuda io_binding"] = lambda: policy(observation)
    cuda_graph = graph.to("cuda")

    def eager_cuda() -> np.ndarray:
        with torch.inference_mode():
            inputs = [torch.from_numpy(observation["state"][None]).to("cuda")]
            inputs += [torch.from_numpy(v[None]).to("cuda") for n, v in observation.items() if n != "state"]
            return cuda_graph(*inputs).cpu().numpy()  # .cpu() waits for the GPU: the command is needed on the host

    cases["torch eager cuda"] = eager_cuda
    return cases


def measure(cases: dict[str, Callable[[], Any]], calls: int, rounds: int) -> dict[str, np.ndarray]:
    """Per case, the time of each call [ms]; 200 untimed calls first, then `rounds` rounds alternating between cases."""
    for call in cases.values():
        for _ in range(200):
            call()
    times: dict[str, list[int]] = {name: [] for name in cases}
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        for name, call in cases.items():
            record = times[name].append
            for _ in range(per_round):
                start = time.perf_counter_ns()
                call()
                record(time.perf_counter_ns() - start)
    return {name: np.asarray(values, np.float64) / 1e6 for name, values in times.items()}


def figures(times: np.ndarray) -> dict[str, float]:
    return {key: round(float(np.percentile(times, q)), 4) for key, q in PERCENTILES.items()} | {"calls": int(times.size)}


E2E_GOAL = {"rate_hz": 500.0, "p99_ms": 2.0}
LIFT_JOINTS = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]


def end_to_end(rates_hz: list[float], seconds: float) -> dict[str, Any] | None:
    """Observation -> command through the policy node over DDS (engineer C's part, issue 15), per rate in ``rates_hz``
    for ``seconds``: the MLP policy, its card retimed to the rate, run by the ``policy`` node (a process, on the
    lift features file) while this process plays the robot: joint_states, eef_pose and object_pose published at the
    rate, /robot/command received, on localhost and a discovery tag of their own.

    Per rate: from the node's /policy/status (its own clock) ``node_end_to_end`` = newest observation's arrival ->
    command published (it includes the wait for the next control tick: up to a period, set by the phase between the
    robot's clock and the node's) and ``node_control`` = tick -> command published (what the node itself adds);
    from this process ``round_trip`` = the newest observation published -> its command received; ``missed`` =
    control ticks the node skipped while measured, ``commands`` = received / expected. Goal on the CPU: node
    end-to-end p99 < 2 ms at 500 Hz with no missed cycle."""
    import json
    import subprocess
    import uuid

    from robot_stack.deploy.card import ModelCard, load_model
    from robot_stack.deploy.export import write_model

    os.environ.update({"ROBOT_STACK_ROS_BACKEND": "dds", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                       "ROBOT_STACK_DDS_TAG": f"policy-latency-{uuid.uuid4().hex[:12]}"})
    from robot_stack import ros
    from robot_stack.launch.package import package_share_directory
    from robot_stack.ros import convert

    features = package_share_directory() / "launch" / "params" / "recorder_lift.yaml"
    rng = np.random.default_rng(0)
    poses = {"/eef_pose": convert.pose_stamped([0.1, 0.0, 1.0, 0, 0, 0, 1]),
             "/object_pose": convert.pose_stamped([0.0, 0.0, 0.82, 0, 0, 0, 1])}
    joints = convert.joint_state(LIFT_JOINTS, rng.normal(size=9), rng.normal(size=9))
    rows = []
    ros.init([])
    node = ros.create_node("policy_latency_robot")
    publishers = {"/joint_states": node.create_publisher("sensor_msgs/msg/JointState", "/joint_states", ros.qos.SENSOR_DATA)}
    publishers |= {topic: node.create_publisher("geometry_msgs/msg/PoseStamped", topic, ros.qos.SENSOR_DATA)
                   for topic in poses}
    arrivals: list[int] = []
    status: dict[str, Any] = {}
    node.create_subscription("std_msgs/msg/Float64MultiArray", "/robot/command",
                             lambda _m: arrivals.append(time.perf_counter_ns()), ros.qos.DEFAULT.with_depth(1000))
    node.create_subscription("std_msgs/msg/String", "/policy/status", lambda m: status.update(json.loads(m.data)),
                             ros.qos.TRANSIENT_LOCAL)
    try:
        with tempfile.TemporaryDirectory() as folder:
            path, _, _ = build_policy(Path(folder), "mlp")
            for rate in rates_hz:
                model_bytes, card = load_model(path)
                data = json.loads(card.to_json())
                data["command"]["rate_hz"] = rate
                model = Path(folder) / f"mlp_{rate:g}hz.onnx"
                write_model(model, model_bytes, ModelCard(data))
                process = subprocess.Popen(
                    [sys.executable, "-m", "robot_stack.launch.entry_point", "policy", "--ros-args", "-p",
                     f"model:={model}", "-p", f"features:={features}", "-p", "status_hz:=5.0"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                try:
                    rows.append(_node_run(ros, node, publishers, joints, poses, arrivals, status, process, rate, seconds))
                finally:
                    process.send_signal(subprocess.signal.SIGINT)
                    process.wait(30)
                status.clear()
    finally:
        node.destroy_node()
        ros.shutdown()
    for row in rows:
        print(f"end to end at {row['rate_hz']:g} Hz: node p50/p99 {row['node_end_to_end']['p50']:.3f}/"
              f"{row['node_end_to_end']['p99']:.3f} ms (tick -> command {row['node_control']['p99']:.3f} ms p99), "
              f"round trip p99 {row['round_trip']['p99_ms']:.3f} ms, missed {row['missed']}, "
              f"commands {row['commands']['received']}/{row['commands']['expected']}")
    goal_row = next((r for r in rows if r["rate_hz"] == E2E_GOAL["rate_hz"]), None)
    goal = None
    if goal_row is not None:
        p99 = goal_row["node_end_to_end"]["p99"]
        goal = {"what": f"node end-to-end p99 < {E2E_GOAL['p99_ms']:g} ms at {E2E_GOAL['rate_hz']:g} Hz, no missed cycle",
                "p99_ms": p99, "missed": goal_row["missed"],
                "met": p99 is not None and p99 < E2E_GOAL["p99_ms"] and goal_row["missed"] == 0}
        print(f"goal: {goal['what']}: {p99:.3f} ms, {goal['missed']} missed -> {'met' if goal['met'] else 'NOT met'}")
    return {"rates": rows, "goal": goal}


def _node_run(ros, node, publishers, joints, poses, arrivals, status, process, rate, seconds) -> dict[str, Any]:
    """Publish observations at `rate` until the node commands, then for `seconds`; the figures of end_to_end."""
    period_ns = int(1e9 / rate)
    published: list[int] = []

    def publish_until(done) -> None:
        next_ns = time.perf_counter_ns()
        while not done():
            if process.poll() is not None:
                raise SystemExit(f"the policy node stopped: {process.stderr.read().strip()}")
            now = time.perf_counter_ns()
            if now >= next_ns:
                publishers["/joint_states"].publish(joints)
                for topic, message in poses.items():
                    publishers[topic].publish(message)
                published.append(time.perf_counter_ns())
                next_ns += period_ns
            ros.spin_once(node, max(0.0, (next_ns - time.perf_counter_ns()) / 1e9))

    deadline = time.monotonic() + 120
    publish_until(lambda: status.get("state") == "running" or time.monotonic() > deadline)
    before = dict(status)
    arrivals.clear()
    published.clear()
    start = time.monotonic()
    publish_until(lambda: time.monotonic() - start > seconds)
    received = len(arrivals)
    end = time.time()
    publish_until(lambda: status.get("time", 0) > end or time.monotonic() - start > seconds + 5)
    sent = np.asarray(published)
    commands = np.asarray(arrivals[:received])
    newest = np.searchsorted(sent, commands, side="right") - 1
    trips = (commands[newest >= 0] - sent[newest[newest >= 0]]) / 1e6
    return {"rate_hz": rate, "seconds": seconds,
            "node_end_to_end": status.get("end_to_end_ms"), "node_control": status.get("control_ms"),
            "round_trip": figures(trips) if trips.size else None,
            "missed": status.get("missed", 0) - before.get("missed", 0),
            "commands": {"received": received, "expected": int(seconds * rate)},
            "inference": status.get("inference_ms")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="mlp,image", help="comma-separated, from mlp,image")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: the CPU cases and the CUDA EP + torch on CUDA (where onnxruntime-gpu and CUDA are)")
    parser.add_argument("--calls", type=int, default=None, help=f"timed calls per case (default {CALLS})")
    parser.add_argument("--rounds", type=int, default=3, help="the timed calls are split into this many rounds")
    parser.add_argument("--rates", default="50,500", help="end-to-end: control rates [Hz] of the node runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="end-to-end: seconds per rate")
    args = parser.parse_args()
    kinds = [k for k in args.policies.split(",") if k]
    if not kinds or any(k not in CALLS for k in kinds):
        parser.error(f"--policies: give mlp, image or both, got {args.policies!r}")
    torch.set_num_threads(1)
    import onnxruntime

    host = machine(["numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "robot_stack"], device=args.device,
                   torch_threads=torch.get_num_threads(), ort_providers=onnxruntime.get_available_providers())
    print(f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__} (1 thread), "
          f"load average {host['machine']['load_average'][0]:.2f} on {host['machine']['cores']} cores")
    devices = ["cpu"]
    cuda_note = None
    if args.device == "cuda":
        missing = [what for what, ok in (("onnxruntime's CUDA execution provider",
                                          "CUDAExecutionProvider" in onnxruntime.get_available_providers()),
                                         ("a CUDA device for torch", torch.cuda.is_available())) if not ok]
        if missing:
            cuda_note = f"no CUDA figures: {' and '.join(missing)} missing"
            print(cuda_note)
        else:
            devices.append("cuda")

    rows = []
    header = f"{'policy':6s} {'case':20s} {'p50 ms':>8s} {'p99 ms':>8s} {'p99.9 ms':>9s} {'torch/this p99':>15s}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as folder:
        for kind in kinds:
            path, graph, observation = build_policy(Path(folder), kind)
            for device in devices:
                calls = args.calls or (CALLS[kind] * (5 if device == "cuda" else 1))
                times = measure(cases_for(path, graph, observation, device), calls, args.rounds)
                baseline = figures(times["torch eager" if device == "cpu" else "torch eager cuda"])
                for case, case_times in times.items():
                    row = {"policy": kind, "device": device, "case": case, **figures(case_times)}
                    row["ratio_torch_p50"] = round(baseline["p50_ms"] / row["p50_ms"], 2)
                    row["ratio_torch_p99"] = round(baseline["p99_ms"] / row["p99_ms"], 2)
                    rows.append(row)
                    print(f"{kind:6s} {case:20s} {row['p50_ms']:8.4f} {row['p99_ms']:8.4f} {row['p99.9_ms']:9.4f} "
                          f"{row['ratio_torch_p99']:15.2f}", flush=True)
    print("ratio = torch eager / this case (above 1: faster than eager torch); batch of one, one inference per call")
    goal_row = next((r for r in rows if r["policy"] == "mlp" and r["case"] == "ort 1 thread"), None)
    goal = None if goal_row is None else {"what": f"onnxruntime p99 < {MLP_GOAL_P99_MS} ms for the MLP on the CPU",
                                          "p99_ms": goal_row["p99_ms"], "met": goal_row["p99_ms"] < MLP_GOAL_P99_MS}
    if goal:
        print(f"goal: {goal['what']}: {goal['p99_ms']:.4f} ms -> {'met' if goal['met'] else 'NOT met'}")
    rates = [float(r) for r in args.rates.split(",") if r]
    host["machine"]["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    result = {
        "benchmark": "policy_latency",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **host,
        "settings": {"state": STATE, "command": COMMAND_NAMES, "image": IMAGE, "hidden_dims": [256, 256],
                     "algorithm": "bc", "rounds": args.rounds, "calls": args.calls or CALLS, "devices": devices,
                     "cuda_note": cuda_note},
        "inference": rows,
        "goal": goal,
        "end_to_end": end_to_end(rates, args.seconds),
    }
    write_result(RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
