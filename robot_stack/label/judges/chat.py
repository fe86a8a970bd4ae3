"""The `chat` judge (RL-VLM-F, Wang et al. 2024): any OpenAI-compatible /v1/chat/completions endpoint that
takes images (vLLM, llama.cpp server, Ollama, or a hosted model), asked in two stages per pair:

1. analysis: both frames (PNG, base64 data URLs) and the task; the model describes each image and how far
   it is toward the goal, without deciding;
2. answer: the same conversation plus the model's analysis, then a request for exactly one of 0 (image 1
   closer), 1 (image 2 closer) or -1 (no difference / cannot tell).

The second reply is parsed strictly (the whole reply, bar spaces, quotes and a final period, must be 0, 1 or
-1); anything else counts as an abstention (stats: malformed). Options: endpoint=URL (a base such as
http://127.0.0.1:8000 or .../v1, or the full .../chat/completions URL), model_name, api_key_env (the name of
an environment variable holding the key; the key is sent as a bearer token and never printed), timeout [s],
retries, backoff [s] (doubled after each try), max_tokens (of the analysis), temperature.

HTTP uses the standard library only (urllib). 429, 5xx and timeouts are retried with exponential backoff up
to `retries` times; a refused connection, an unknown host or another 4xx is one LabelError line at once.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
from PIL import Image

from robot_stack.errors import LabelError
from robot_stack.label.base import ABSTAIN, LabelContext
from robot_stack.label.judges.base import Judge, option

ANALYSIS_PROMPT = (
    "Image 1 and Image 2 show a robot working on this goal: {task}\n"
    "Describe what each image shows, then compare how far each image is toward achieving the goal. "
    "Do not give a final answer yet."
)
ANSWER_PROMPT = (
    "Given your analysis, which image is closer to achieving the goal: {task}\n"
    "Reply with exactly one of: 0 if Image 1 is closer, 1 if Image 2 is closer, -1 if there is no "
    "difference or you cannot tell. Reply with the number only."
)
_ANSWER = re.compile(r"-?[01]")


def endpoint_url(endpoint: str) -> str:
    """The chat-completions URL of an endpoint given as a server, its /v1 base or the full URL."""
    url = endpoint.strip().rstrip("/")
    if not re.match(r"https?://", url):
        raise LabelError(f"endpoint={endpoint!r} is not an http(s) URL: give e.g. endpoint=http://127.0.0.1:8000/v1")
    if url.endswith("/chat/completions"):
        return url
    return f"{url}/chat/completions" if url.endswith("/v1") else f"{url}/v1/chat/completions"


class ChatEndpoint:
    """POSTs chat-completion requests to one endpoint: retries 429 / 5xx / timeouts with exponential backoff."""

    def __init__(self, config: dict[str, Any]) -> None:
        endpoint = option(config, "endpoint", str, None)
        if not endpoint:
            raise LabelError("the chat and logprob judges need the model's server: give endpoint=URL "
                             "(an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1)")
        self.url = endpoint_url(endpoint)
        self.model_name = option(config, "model_name", str, "")
        self.timeout = option(config, "timeout", float, 120.0)
        self.retries = option(config, "retries", int, 5)
        self.backoff = option(config, "backoff", float, 1.0)
        key_env = option(config, "api_key_env", str, None)
        self.key = None
        if key_env:
            self.key = os.environ.get(key_env)
            if not self.key:
                raise LabelError(f"api_key_env={key_env}: the environment variable {key_env} is not set")
        self.requests = 0  # HTTP requests sent, retries included

    def complete(self, messages: list[dict[str, Any]], **decoding: Any) -> dict[str, Any]:
        """The endpoint's JSON response to `messages` with the given decoding settings."""
        body = json.dumps({"model": self.model_name, "messages": messages, **decoding}).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.requests += 1
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                if error.code == 429 or error.code >= 500:
                    last = f"HTTP {error.code}"
                    continue
                detail = error.read(300).decode(errors="replace").strip().replace("\n", " ")
                raise LabelError(f"endpoint {self.url} refused the request: HTTP {error.code} {error.reason}"
                                 f"{': ' + detail if detail else ''} (check endpoint, model_name and the API key)") \
                    from None
            except (TimeoutError, socket.timeout):
                last = f"no answer within {self.timeout:g} s"
            except urllib.error.URLError as error:
                if isinstance(error.reason, (TimeoutError, socket.timeout)):
                    last = f"no answer within {self.timeout:g} s"
                    continue
                raise LabelError(f"endpoint {self.url} cannot be reached ({error.reason}): is the model server "
                                 "running there?") from None
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise LabelError(f"endpoint {self.url} answered something that is not JSON: is it an "
                                 "OpenAI-compatible chat-completions server?") from None
            except ConnectionError as error:
                raise LabelError(f"endpoint {self.url} cannot be reached ({error}): is the model server "
                                 "running there?") from None
        raise LabelError(f"endpoint {self.url} kept failing ({last}) after {self.retries + 1} tries: answers so far "
                         "are cached, run the same command again later (or raise retries=N)")


def reply_text(response: dict[str, Any]) -> str | None:
    """The first choice's message text, or None when the response has none."""
    try:
        text = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None


def image_url(frame: np.ndarray) -> dict[str, Any]:
    """An image content part: the uint8 [H, W, 3] frame as a PNG base64 data URL."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def pair_message(first: np.ndarray, second: np.ndarray, text: str) -> dict[str, Any]:
    """A user message: "Image 1:", the first frame, "Image 2:", the second frame, then `text`."""
    return {"role": "user", "content": [
        {"type": "text", "text": "Image 1:"}, image_url(first),
        {"type": "text", "text": "Image 2:"}, image_url(second),
        {"type": "text", "text": text}]}


class ChatJudge(Judge):
    name = "chat"
    cached = True

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.endpoint = ChatEndpoint(config)
        self.decoding = {"temperature": option(config, "temperature", float, 0.0),
                         "max_tokens": option(config, "max_tokens", int, 512)}
        self.malformed = 0

    def cache_key(self, context: LabelContext) -> dict[str, Any]:
        return {"model": self.endpoint.model_name, "prompt": [ANALYSIS_PROMPT, ANSWER_PROMPT], "task": context.task,
                "decoding": self.decoding, "feature": self._feature(context)}

    def ask(self, pairs: np.ndarray, context: LabelContext) -> np.ndarray:
        feature = self._feature(context)
        answers = np.full(len(pairs), ABSTAIN, np.int8)
        for i, (a, b) in enumerate(pairs):
            frames = context.dataset.frames(feature, a, a + 1)[0], context.dataset.frames(feature, b, b + 1)[0]
            question = pair_message(*frames, ANALYSIS_PROMPT.format(task=context.task))
            analysis = reply_text(self.endpoint.complete([question], **self.decoding))
            if analysis is None:
                self.malformed += 1
                continue
            reply = reply_text(self.endpoint.complete(
                [question, {"role": "assistant", "content": analysis},
                 {"role": "user", "content": ANSWER_PROMPT.format(task=context.task)}],
                temperature=self.decoding["temperature"], max_tokens=4))
            answer = parse_answer(reply)
            self.malformed += answer is None
            answers[i] = ABSTAIN if answer is None else answer
        return answers


def parse_answer(reply: str | None) -> int | None:
    """0, 1 or -1 from a reply that is exactly that number (spaces, quotes, a final period allowed), else None."""
    if reply is None:
        return None
    text = reply.strip().strip("\"'`").rstrip(".").strip()
    return int(text) if _ANSWER.fullmatch(text) else None

