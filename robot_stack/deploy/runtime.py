"""An exported policy in onnxruntime, as the policy node runs it: one observation in, one command out.

On the CPU by default with one intra-op thread, one inter-op thread and sequential execution: for the small
MLPs robot policies are, a thread pool costs more in hand-offs than it saves (benchmarks/policy_latency.py
measures it). With ``device="cuda"`` the CUDA execution provider runs it with I/O binding and a fixed batch of
one: the inputs are copied into buffers on the GPU that stay bound, the command comes back into a bound host
buffer. CUDA asked where onnxruntime has none (the CPU package, or CUDA libraries that do not load) is a
DeployError line, never a silent fall back to the CPU.

Run ``warmup`` before the first observation: the first inferences allocate and pick kernels, and warm-up checks
the latency after them against the caller's budget (half the control period, say); ``warmup_figures`` stays None
until a warm-up passed, so a caller can tell a policy that may take control.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.deploy.card import ModelCard, card_path, load_model, sha256_bytes
from robot_stack.errors import DeployError

DEVICES = ("cpu", "cuda")
OUTPUT = "command"
LATENCY_WINDOW = 10_000
"""Inference times kept for latency() (the most recent calls)."""
CHECK_RUNS = 50
"""Inferences timed after warm-up for the latency check."""
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8}


class OnnxPolicy:
    """An ONNX model with its card, checked against each other, ready to map observations to commands.

    model: path of a .onnx file (its ``<name>.json`` beside it, if there, must carry the file's sha256) or its
    bytes (a model sent on /policy/load). device: "cpu" or "cuda"; threads: onnxruntime's intra-op threads;
    io_binding: bind inputs and output to fixed batch-1 buffers (default: on CUDA only).
    """

    def __init__(self, model: str | Path | bytes, device: str = "cpu", threads: int = 1,
                 io_binding: bool | None = None) -> None:
        model_bytes, card = load_model(model)
        if not isinstance(model, (bytes, bytearray, memoryview)):
            _check_card_copy(Path(model), model_bytes)
        if device not in DEVICES:
            raise DeployError(f"device {device!r} is not one the policy runs on: use cpu or cuda")
        if not isinstance(threads, int) or threads < 1:
            raise DeployError(f"threads must be a whole number >= 1, got {threads!r}")
        self.card: ModelCard = card
        self.device, self.threads = device, threads
        self.sha256 = sha256_bytes(model_bytes)
        self.session = _session(model_bytes, card.name, device, threads)
        self._inputs = _graph_inputs(self.session, card)
        self._size = len(card.command["names"])
        use_binding = device == "cuda" if io_binding is None else io_binding
        self._run = _BoundRun(self.session, self._inputs, self._size, device) if use_binding else _PlainRun(self.session)
        self.warmup_figures: dict[str, Any] | None = None
        self._times_ns: deque[int] = deque(maxlen=LATENCY_WINDOW)
        self._calls = 0

    def warmup(self, n: int = 20, budget_ms: float | None = None) -> dict[str, Any]:
        """Run ``n`` inferences on zero inputs, then time CHECK_RUNS more; DeployError when their p99 is over
        ``budget_ms``. Returns (and keeps as ``warmup_figures``) {"first_ms", "warmup_runs", "check_runs", "p50_ms",
        "p99_ms", "max_ms", "budget_ms"} [ms]. Warm-up inferences are not in latency()."""
        feeds = {name: np.zeros((1, *shape), dtype) for name, (shape, dtype) in self._inputs.items()}
        first_ms = _timed(self._run, feeds) / 1e6
        for _ in range(max(0, n - 1)):
            self._run(feeds)
        times = np.array([_timed(self._run, feeds) for _ in range(CHECK_RUNS)]) / 1e6
        figures = {"first_ms": first_ms, "warmup_runs": max(1, n), "check_runs": CHECK_RUNS,
                   "p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
                   "max_ms": float(times.max()), "budget_ms": budget_ms}
        if budget_ms is not None and figures["p99_ms"] > budget_ms:
            raise DeployError(f"model {self.card.name}: inference p99 {figures['p99_ms']:.3f} ms after warm-up is over "
                              f"the budget of {budget_ms:.3f} ms on {self._where()}: it cannot keep the control rate; "
                              "run it on a faster device (device:=cuda), with more threads, or deploy a smaller model")
        self.warmup_figures = figures
        return figures

    def __call__(self, inputs: dict[str, Any]) -> np.ndarray:
        """{"state": float32 [S] or [1, S], "image.<cam>": uint8 [H, W, 3] or [1, H, W, 3]} -> command float64 [A]
        (the model's output for a batch of one, in the command's units)."""
        feeds = self._feeds(inputs)
        start = time.perf_counter_ns()
        command = self._run(feeds)
        self._times_ns.append(time.perf_counter_ns() - start)
        self._calls += 1
        return command.reshape(-1).astype(np.float64)

    def latency(self) -> dict[str, Any]:
        """Inference time [ms] over the calls so far (the last LATENCY_WINDOW): {"p50_ms", "p99_ms", "n"};
        the percentiles are None before the first call. n counts every call."""
        if not self._times_ns:
            return {"p50_ms": None, "p99_ms": None, "n": 0}
        times = np.fromiter(self._times_ns, np.float64, len(self._times_ns)) / 1e6
        return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "n": self._calls}

    def _feeds(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        if inputs.keys() != self._inputs.keys():
            missing, extra = sorted(self._inputs.keys() - inputs.keys()), sorted(inputs.keys() - self._inputs.keys())
            raise DeployError(f"model {self.card.name} takes inputs {', '.join(self._inputs)}; "
                              + "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                                            f"not its input {', '.join(extra)}" if extra else "") if part))
        feeds = {}
        for name, (shape, dtype) in self._inputs.items():
            array = np.asarray(inputs[name])
            if dtype == np.uint8 and array.dtype != np.uint8:
                raise DeployError(f"input {name} is {array.dtype}; model {self.card.name} takes uint8 RGB {list(shape)}")
            if array.shape != shape and array.shape != (1, *shape):
                raise DeployError(f"input {name} has shape {list(array.shape)}; model {self.card.name} takes "
                                  f"{list(shape)} (or [1, {', '.join(map(str, shape))}])")
            feeds[name] = np.ascontiguousarray(array.reshape(1, *shape), dtype)
        return feeds

    def _where(self) -> str:
        return "cuda" if self.device == "cuda" else f"the cpu with {self.threads} thread(s)"


class _PlainRun:
    """session.run with the inputs as numpy arrays (onnxruntime allocates the output each call)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([OUTPUT], feeds)[0]


class _BoundRun:
    """I/O binding, batch of one: each input copied into its bound buffer on the device, the output written by
    onnxruntime into one bound host buffer; nothing allocated per call."""

    def __init__(self, session: Any, inputs: dict[str, tuple[tuple[int, ...], Any]], size: int, device: str) -> None:
        import onnxruntime

        self.session, self.binding = session, session.io_binding()
        self.buffers = {}
        for name, (shape, dtype) in inputs.items():
            buffer = onnxruntime.OrtValue.ortvalue_from_shape_and_type([1, *shape], dtype, device, 0)
            self.binding.bind_ortvalue_input(name, buffer)
            self.buffers[name] = buffer
        self.output = np.zeros((1, size), np.float32)
        self.binding.bind_ortvalue_output(OUTPUT, onnxruntime.OrtValue.ortvalue_from_numpy(self.output))

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        for name, array in feeds.items():
            self.buffers[name].update_inplace(array)
        self.session.run_with_iobinding(self.binding)
        return self.output.copy()


def _timed(run: Any, feeds: dict[str, np.ndarray]) -> int:
    start = time.perf_counter_ns()
    run(feeds)
    return time.perf_counter_ns() - start


def _session(model_bytes: bytes, name: str, device: str, threads: int) -> Any:
    """An onnxruntime session: `threads` intra-op, one inter-op, sequential; CUDA first when device is cuda."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        available = onnxruntime.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise DeployError(f"device cuda asked for model {name}, but this onnxruntime {onnxruntime.__version__} has "
                              f"no CUDA execution provider (it has {', '.join(available)}): install the gpu extra "
                              "(onnxruntime-gpu in place of onnxruntime) or run the policy with device:=cpu")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]  # CPU only for ops CUDA lacks
    try:
        session = onnxruntime.InferenceSession(model_bytes, options, providers=providers)
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise DeployError(f"model {name} does not load in onnxruntime: {str(error).splitlines()[0]}; "
                          "re-export it with robot-stack export") from None
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise DeployError(f"device cuda asked for model {name}, but onnxruntime could not start its CUDA execution "
                          "provider (no GPU, or the CUDA/cuDNN libraries onnxruntime-gpu needs do not load; its log "
                          "says which): fix the GPU setup or run the policy with device:=cpu")
    return session


def _graph_inputs(session: Any, card: ModelCard) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Input name -> (shape without batch, numpy dtype) from the card, after checking the graph agrees with it."""
    problems = []
    graph = {node.name: node for node in session.get_inputs()}
    for name, shape in card.inputs.items():
        node = graph.get(name)
        if node is None:
            problems.append(f"input {name} of the card is not in the graph")
        elif [d if isinstance(d, int) else None for d in node.shape[1:]] != list(shape) or node.type not in INPUT_TYPES:
            problems.append(f"input {name} is {node.type} {node.shape[1:]} in the graph, {list(shape)} on the card")
    problems += [f"graph input {name} is not on the card" for name in graph.keys() - card.inputs.keys()]
    outputs = {node.name: node for node in session.get_outputs()}
    size = len(card.command["names"])
    if OUTPUT not in outputs:
        problems.append(f"the graph has no output {OUTPUT!r}")
    elif outputs[OUTPUT].shape[-1] != size:
        problems.append(f"output {OUTPUT} has {outputs[OUTPUT].shape[-1]} values, the card's command {size}")
    if problems:
        raise DeployError(f"model {card.name} does not match its card: {'; '.join(problems)}; re-export it")
    return {name: (tuple(shape), INPUT_TYPES[graph[name].type]) for name, shape in card.inputs.items()}


def _check_card_copy(path: Path, model_bytes: bytes) -> None:
    """The card's JSON beside the model names the sha256 of the file it was exported with: a changed file is refused."""
    copy = card_path(path)
    if not copy.is_file():
        return
    try:
        expected = json.loads(copy.read_text()).get("onnx_sha256")
    except (OSError, ValueError, AttributeError):
        raise DeployError(f"{copy} (the card beside model {path}) cannot be read as JSON: re-export the model") from None
    actual = sha256_bytes(model_bytes)
    if expected is not None and expected != actual:
        raise DeployError(f"model {path} does not match its card {copy}: the file's sha256 is {actual[:12]}..., the "
                          f"card says {str(expected)[:12]}...: the model was changed after export; restore it or re-export")
