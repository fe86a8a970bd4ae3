"""Preference judges (robot_stack.label.judges): the answer convention 0 / 1 / -1, the persistent answer cache,
the query budget, and each judge: `time` (Rank2Reward), `oracle` (sim reward with an error rate), `clip`
(tiny open_clip model from conftest), `chat` (RL-VLM-F two-stage prompt) and `logprob` (TOPReward-style).

The chat and logprob judges talk to a real HTTP server on 127.0.0.1 started in the test (http.server in a
thread) that speaks the chat-completions protocol; datasets are real Zarr stores written by DatasetWriter.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from robot_stack.cli.main import main
from robot_stack.data import Dataset, DatasetWriter, FeatureSpec, validate
from robot_stack.errors import LabelError
from robot_stack.label.base import ABSTAIN, PREFER_FIRST, PREFER_SECOND, LabelContext
from robot_stack.label.judges import JUDGES
from robot_stack.label.judges.base import BATCH_PAIRS, build_judge
from robot_stack.label.judges.chat import ANSWER_PROMPT

TASK = "push the block to the goal"
LENGTH = 12
SUCCESS = [True, False, True, False]
FEATURES = [
    FeatureSpec("image.front", "uint8", (8, 8, 3), "image", topic="/camera/front/image_raw"),
    FeatureSpec("sim_reward", "float32", (), "reward"),
    FeatureSpec("action", "float32", (2,), "action"),
]


def sim_reward(success: bool) -> np.ndarray:
    """float32 [LENGTH]: rises to 1 over a successful episode, stalls at 0.4 in a failed one."""
    return np.linspace(0, 1 if success else 0.4, LENGTH).astype(np.float32)


@pytest.fixture
def dataset(tmp_path) -> Dataset:
    """4 episodes of 12 frames (success, fail, success, fail), every frame's image different."""
    writer = DatasetWriter.create(tmp_path / "d.zarr", robot={"name": "arm"}, record_hz=10, features=FEATURES)
    rng = np.random.default_rng(0)
    for index, success in enumerate(SUCCESS):
        writer.append_frames({"image.front": rng.integers(0, 256, (LENGTH, 8, 8, 3), dtype=np.uint8),
                              "sim_reward": sim_reward(success), "action": np.zeros((LENGTH, 2), np.float32),
                              "timestamp": index * 10 + np.arange(LENGTH) / 10})
        writer.commit_episode("push", success)
    writer.close()
    return Dataset.open(tmp_path / "d.zarr")


def context(ds: Dataset, **config) -> LabelContext:
    return LabelContext(ds, TASK, camera="image.front", config=config, seed=3, log=lambda line: None)


# ---- a chat-completions server on 127.0.0.1

ANALYSIS = "Image 1 shows the block far from the goal; Image 2 shows it closer."


class ChatServer:
    """Speaks POST /v1/chat/completions. `script` is a list of replies used in order (then `default`): each a
    (status, body dict or text, delay s) or a callable(request) -> that. Every request body is kept."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: list = []
        self.default = self.vlm
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                reply = server.script.pop(0) if server.script else server.default
                status, payload, delay = reply(body) if callable(reply) else reply
                time.sleep(delay)  # a slow server: the client's timeout fires first
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout test)

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @staticmethod
    def message(text: str, logprobs: list | None = None) -> dict:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        if logprobs is not None:
            choice["logprobs"] = {"content": [{"token": text, "logprob": -0.1, "top_logprobs": logprobs}]}
        return {"id": "x", "object": "chat.completion", "choices": [choice]}

    def vlm(self, request: dict) -> tuple:
        """The analysis for a first-stage request; "1" for a second-stage one."""
        return 200, self.message("1" if len(request["messages"]) == 3 else ANALYSIS), 0.0


@pytest.fixture
def server():
    chat = ChatServer()
    yield chat
    chat.http.shutdown()
    chat.http.server_close()


def chat_judge(server: ChatServer, **config):
    return build_judge("chat", {"endpoint": server.url, "model_name": "vlm-test", "backoff": 0.01, **config})


PAIRS = np.array([[0, 5], [13, 2], [30, 31], [40, 7]])


def test_the_judge_table_names_every_judge_and_an_unknown_one_is_one_line():
    assert set(JUDGES) == {"time", "oracle", "clip", "chat", "logprob"}
    with pytest.raises(LabelError, match=r"unknown judge 'gpt'.*choose one of") as error:
        build_judge("gpt", {})
    assert "\n" not in str(error.value)


# ---- chat: RL-VLM-F two-stage prompt


def test_chat_asks_two_stages_per_pair_with_the_frames_and_the_first_answer(server, dataset):
    judge = chat_judge(server)
    answers = judge.prefer(PAIRS[:1], context(dataset))
    assert answers.tolist() == [PREFER_SECOND]
    assert len(server.requests) == 2
    first, second = server.requests
    parts = first["messages"][0]["content"]
    urls = [part["image_url"]["url"] for part in parts if part["type"] == "image_url"]
    assert len(urls) == 2 and TASK in parts[-1]["text"] and first["model"] == "vlm-test"
    for url, frame in zip(urls, PAIRS[0], strict=True):  # the images sent are the pair's frames, in order
        assert url.startswith("data:image/png;base64,")
        sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        np.testing.assert_array_equal(sent, dataset.frames("image.front", frame, frame + 1)[0])
    assert second["messages"][1] == {"role": "assistant", "content": ANALYSIS}
    assert second["messages"][2]["content"] == ANSWER_PROMPT.format(task=TASK)
    assert all(f"{value} if" in second["messages"][2]["content"] for value in ("0", "1", "-1"))


@pytest.mark.parametrize("reply, expected", [("0", PREFER_FIRST), (" 1.", PREFER_SECOND), ("-1", ABSTAIN),
                                             ("Image 2 is closer, so 1", ABSTAIN), ("2", ABSTAIN)])
def test_chat_parses_the_answer_strictly_and_counts_malformed_ones(server, dataset, reply, expected):
    server.script = [(200, server.message(ANALYSIS), 0.0), (200, server.message(reply), 0.0)]
    judge = chat_judge(server)
    assert judge.prefer(PAIRS[:1], context(dataset)).tolist() == [expected]
    assert judge.malformed == (reply in ("Image 2 is closer, so 1", "2"))
    assert judge.stats.abstentions == (expected == ABSTAIN)


def test_chat_retries_a_429_a_503_and_a_timeout_then_succeeds(server, dataset):
    server.script = [(429, {"error": "slow down"}, 0.0), (503, {"error": "busy"}, 0.0),
                     (200, server.message(ANALYSIS), 2.0)]  # answered too late: the client times out
    judge = chat_judge(server, timeout=0.5)
    assert judge.prefer(PAIRS[:1], context(dataset)).tolist() == [PREFER_SECOND]
    assert len(server.requests) == 5  # 429, 503, timeout, then the two stages
    assert judge.endpoint.requests == 5


def test_chat_gives_up_after_its_retries_with_one_line(server, dataset):
    server.default = (503, {"error": "overloaded"}, 0.0)
    with pytest.raises(LabelError, match=r"kept failing \(HTTP 503\) after 3 tries") as error:
        chat_judge(server, retries=2).prefer(PAIRS[:1], context(dataset))
    assert "\n" not in str(error.value) and len(server.requests) == 3


def test_a_refusing_endpoint_is_one_label_error_line(dataset):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    judge = build_judge("chat", {"endpoint": f"http://127.0.0.1:{port}", "backoff": 0.01})
    with pytest.raises(LabelError, match=rf"endpoint http://127.0.0.1:{port}/v1/chat/completions cannot be reached "
                                         r".*is the model server running there\?") as error:
        judge.prefer(PAIRS[:1], context(dataset))
    assert "\n" not in str(error.value)


def test_label_run_with_a_refusing_endpoint_prints_one_line_and_exits_2(dataset, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["label", "run", str(dataset.path), "--labeler", "preference", "--task", TASK, "--no-progress",
                 "--set", "judge=chat", "--set", f"endpoint=http://127.0.0.1:{port}/v1", "--set", "pixels=true"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]  # the job's progress lines go to stderr too
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(r"cannot be reached \(.*refused\): is the model server running there\?$", errors[0]), errors


def test_a_4xx_is_one_line_at_once_and_the_api_key_is_sent_but_never_printed(server, dataset, monkeypatch):
    monkeypatch.setenv("ROBOT_STACK_TEST_KEY", "sk-secret-123")
    server.default = (401, {"error": "bad key"}, 0.0)
    with pytest.raises(LabelError, match=r"refused the request: HTTP 401") as error:
        chat_judge(server, api_key_env="ROBOT_STACK_TEST_KEY").prefer(PAIRS[:1], context(dataset))
    assert "sk-secret-123" not in str(error.value) and "\n" not in str(error.value)
    assert len(server.requests) == 1 and server.headers[0]["Authorization"] == "Bearer sk-secret-123"
    with pytest.raises(LabelError, match="ROBOT_STACK_TEST_NO_KEY is not set"):
        chat_judge(server, api_key_env="ROBOT_STACK_TEST_NO_KEY")


# ---- logprob: TOPReward-style True/False


def logprob_reply(p_true: float | None, text: str = "True"):
    def reply(request: dict) -> tuple:
        if p_true is None:
            return 200, ChatServer.message(text), 0.0
        top = [{"token": "\u2581True", "logprob": float(np.log(p_true))},  # a SentencePiece leading-space mark
               {"token": " False", "logprob": float(np.log(1 - p_true))}, {"token": "Yes", "logprob": -5.0}]
        return 200, ChatServer.message(text, top), 0.0
    return reply


@pytest.mark.parametrize("p_true, text, expected", [
    (0.9, "True", PREFER_SECOND), (0.1, "True", PREFER_FIRST), (0.55, "True", ABSTAIN),  # the text is not read
    (None, "False", PREFER_FIRST), (None, "True.", PREFER_SECOND), (None, "Maybe", ABSTAIN)])
def test_logprob_scores_p_true_and_falls_back_to_the_text_without_logprobs(server, dataset, p_true, text, expected):
    server.default = logprob_reply(p_true, text)
    judge = build_judge("logprob", {"endpoint": server.url, "margin": 0.1})
    assert judge.prefer(PAIRS[:1], context(dataset)).tolist() == [expected]
    request = server.requests[0]
    assert (request["logprobs"], request["top_logprobs"], request["max_tokens"]) == (True, 5, 1)
    assert len(server.requests) == 1 and "True or False" in request["messages"][0]["content"][-1]["text"]
    assert judge.no_logprobs == (p_true is None) and judge.malformed == (text == "Maybe")


# ---- the cache and the budget


def test_the_cache_answers_a_second_run_in_another_process_with_no_requests(server, dataset):
    first = chat_judge(server)
    answers = first.prefer(PAIRS, context(dataset))
    assert len(server.requests) == 2 * len(PAIRS) and first.stats.calls == len(PAIRS)
    script = (
        "import json, sys, numpy as np\n"
        "from robot_stack.data import Dataset\n"
        "from robot_stack.label.base import LabelContext\n"
        "from robot_stack.label.judges.base import build_judge\n"
        "path, url, pairs = sys.argv[1], sys.argv[2], np.array(json.loads(sys.argv[3]))\n"
        "judge = build_judge('chat', {'endpoint': url, 'model_name': 'vlm-test', 'backoff': 0.01})\n"
        f"answers = judge.prefer(pairs, LabelContext(Dataset.open(path), {TASK!r}, camera='image.front'))\n"
        "print(json.dumps([answers.tolist(), judge.stats.calls, judge.stats.cache_hits]))\n")
    out = subprocess.run([sys.executable, "-c", script, str(dataset.path), server.url, json.dumps(PAIRS.tolist())],
                         capture_output=True, text=True, check=True).stdout
    again, calls, hits = json.loads(out)
    assert again == answers.tolist() and (calls, hits) == (0, len(PAIRS))
    assert len(server.requests) == 2 * len(PAIRS)  # nothing asked again
    assert (PAIRS[:, ::-1] != PAIRS).any()
    swapped = chat_judge(server)
    swapped.prefer(PAIRS[:1, ::-1], context(dataset))  # the reversed pair is another question
    assert swapped.stats.calls == 1


def test_the_cache_key_holds_the_model_and_decoding(server, dataset):
    chat_judge(server).prefer(PAIRS, context(dataset))
    asked = len(server.requests)
    chat_judge(server, model_name="other-vlm").prefer(PAIRS, context(dataset))
    chat_judge(server, temperature=0.7).prefer(PAIRS, context(dataset))
    assert len(server.requests) == asked + 2 * 2 * len(PAIRS)  # each is another cache: every pair asked again


def test_a_job_stopped_midway_keeps_the_batches_it_asked(server, dataset):
    pairs = np.stack([np.arange(0, 40), np.arange(1, 41)], 1)
    healthy = 2 * (BATCH_PAIRS + 4)  # requests answered before the server starts refusing
    server.script = [server.vlm] * healthy + [(400, {"error": "model unloaded"}, 0.0)]
    with pytest.raises(LabelError, match="HTTP 400"):
        chat_judge(server).prefer(pairs, context(dataset))
    rerun = chat_judge(server)
    assert (rerun.prefer(pairs, context(dataset)) == PREFER_SECOND).all()
    assert (rerun.stats.cache_hits, rerun.stats.calls) == (BATCH_PAIRS, len(pairs) - BATCH_PAIRS)


def test_a_killed_job_keeps_the_batches_it_asked(server, dataset):
    pairs = np.stack([np.arange(0, 40), np.arange(1, 41)], 1)
    script = (
        "import json, sys, numpy as np\n"
        "from robot_stack.data import Dataset\n"
        "from robot_stack.label.base import LabelContext\n"
        "from robot_stack.label.judges.base import build_judge\n"
        "judge = build_judge('chat', {'endpoint': sys.argv[2], 'model_name': 'vlm-test'})\n"
        f"judge.prefer(np.array(json.loads(sys.argv[3])), LabelContext(Dataset.open(sys.argv[1]), {TASK!r}, "
        "camera='image.front'))\n")
    job: list[subprocess.Popen] = []

    def kill(request: dict) -> tuple:
        job[0].kill()  # SIGKILL while the 21st pair is asked: the first batch of 16 was written, the second not
        return 200, server.message(ANALYSIS), 0.0

    server.script = [server.vlm] * 2 * (BATCH_PAIRS + 4) + [kill]
    job.append(subprocess.Popen([sys.executable, "-c", script, str(dataset.path), server.url,
                                 json.dumps(pairs.tolist())], stderr=subprocess.DEVNULL))
    assert job[0].wait(timeout=120) == -9
    rerun = chat_judge(server)
    assert (rerun.prefer(pairs, context(dataset)) == PREFER_SECOND).all()
    assert (rerun.stats.cache_hits, rerun.stats.calls) == (BATCH_PAIRS, len(pairs) - BATCH_PAIRS)
    assert validate(dataset.path, progress=False) == []


def test_the_budget_stops_asking_and_the_rest_abstain(server, dataset):
    pairs = np.stack([np.arange(0, 10), np.arange(1, 11)], 1)
    judge = chat_judge(server, budget=3)
    answers = judge.prefer(pairs, context(dataset))
    assert len(server.requests) == 2 * 3
    assert answers.tolist() == [PREFER_SECOND] * 3 + [ABSTAIN] * 7
    stats = judge.stats
    assert (stats.calls, stats.over_budget, stats.abstentions, stats.budget_left) == (3, 7, 7, 0)
    assert (judge.prefer(pairs[:3], context(dataset)) == PREFER_SECOND).all()  # cache hits cost no budget
    assert judge.stats.cache_hits == 3 and len(server.requests) == 6


def test_validate_stays_clean_with_a_judge_cache(server, dataset, capsys):
    chat_judge(server).prefer(PAIRS, context(dataset))
    assert (dataset.path / "labels" / "_cache").is_dir()
    assert Dataset.open(dataset.path).label_runs() == [] and Dataset.open(dataset.path).label_arrays() == {}
    assert validate(dataset.path, progress=False) == []
    assert main(["data", "validate", str(dataset.path), "-q"]) == 0
    assert "OK" in capsys.readouterr().out


# ---- time and oracle


def test_time_answers_only_within_successful_episodes(dataset):
    pairs = np.array([[0, 5], [5, 0], [25, 30], [30, 25],  # episodes 0 and 2 succeeded
                      [12, 20], [20, 12], [40, 45],  # episodes 1 and 3 failed
                      [3, 27], [7, 7]])  # across episodes; one frame twice
    answers = build_judge("time", {}).prefer(pairs, context(dataset))
    assert answers.tolist() == [PREFER_SECOND, PREFER_FIRST, PREFER_SECOND, PREFER_FIRST] + [ABSTAIN] * 5
    sampled = build_judge("time", {}).sample_pairs(context(dataset), 200, np.random.default_rng(0))
    episodes = dataset.episode_of(sampled.ravel()).reshape(-1, 2)
    assert (episodes[:, 0] == episodes[:, 1]).all() and set(episodes[:, 0]) == {0, 2}
    assert (sampled[:, 0] != sampled[:, 1]).all()


def test_oracle_agrees_with_sim_reward_and_flips_the_chosen_share(dataset):
    reward = dataset.frames("sim_reward")
    pairs = np.random.default_rng(1).integers(0, dataset.n_frames, (4000, 2))
    truth = np.where(reward[pairs[:, 0]] > reward[pairs[:, 1]], PREFER_FIRST, PREFER_SECOND)
    tie = reward[pairs[:, 0]] == reward[pairs[:, 1]]
    exact = build_judge("oracle", {"error_rate": 0}).prefer(pairs, context(dataset))
    assert (exact[tie] == ABSTAIN).all() and (exact[~tie] == truth[~tie]).all()
    noisy_judge = build_judge("oracle", {"error_rate": "0.25"})
    noisy = noisy_judge.prefer(pairs, context(dataset))
    flipped = (noisy[~tie] != truth[~tie]).mean()
    assert 0.21 < flipped < 0.29, flipped  # binomial sd about 0.007 at this count
    assert noisy_judge.ground_truth and (noisy[tie] == ABSTAIN).all()
    with pytest.raises(LabelError, match=r"error_rate=1.5"):
        build_judge("oracle", {"error_rate": 1.5})


# ---- clip


def test_clip_prefers_the_frame_closer_to_the_task_text_and_abstains_within_the_margin(dataset, tiny_clip):
    import open_clip
    import torch

    from robot_stack.learn.clip_embed import clip_embeddings, load_clip

    model = tiny_clip["checkpoint0"]
    images = clip_embeddings(dataset, "image.front", model, progress=False)
    clip, _ = load_clip(model)
    with torch.no_grad():
        text = clip.encode_text(open_clip.get_tokenizer(model.split(":")[0])([TASK]))[0].numpy()
    similarity = images @ (text / np.linalg.norm(text))
    pairs = np.random.default_rng(2).integers(0, dataset.n_frames, (200, 2))
    gap = similarity[pairs[:, 1]] - similarity[pairs[:, 0]]
    margin = float(np.median(np.abs(gap)))
    ctx = LabelContext(dataset, TASK, camera="image.front", model=model, embeddings=images, log=lambda line: None)
    judge = build_judge("clip", {"margin": margin})
    answers = judge.prefer(pairs, ctx)
    wide = np.abs(gap) >= margin
    assert (answers[~wide] == ABSTAIN).all()
    np.testing.assert_array_equal(answers[wide], np.where(gap[wide] > 0, PREFER_SECOND, PREFER_FIRST))
    assert 0 < wide.sum() < len(pairs)
    again = build_judge("clip", {"margin": margin})
    assert (again.prefer(pairs, ctx) == answers).all() and again.stats.cache_hits == len(pairs)
