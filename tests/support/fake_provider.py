"""A fake OpenAI-compatible provider on loopback — the only fake in end-to-end tests.

Serves chat completions (plain and streamed, with ``usage``), text completions, embeddings,
OpenAI's Responses API (``/v1/responses``, plain and SSE-streamed, with ``usage``), Anthropic's
Messages API (``/v1/messages``, plain and SSE-streamed, with ``usage``; its ``x-api-key`` header is
recorded as ``Authorization: Bearer <key>`` so key checks read one field),
``/models`` and Ollama's ``/api/tags``. A request that offers tools and whose text contains
``use-tool`` is answered with a call of its first tool (``TOOL_ARGUMENTS``), plain or streamed in
each API's own events; fails on demand (status codes, slowness, down); records the Authorization header and
model of every call. Runs in a thread of the test process, or standalone
(``python -m tests.support.fake_provider --port 9000``) for benchmarks, and is steerable over HTTP
(``/_fake/...``) so other processes can drive it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


TOOL_ARGUMENTS = '{"city": "Paris"}'  # what a tool call answers, streamed in two pieces
TOOL_TRIGGER = "use-tool"


def tool_to_call(body: dict[str, Any]) -> str | None:
    """The name of the tool a request should be answered with a call of, or None for a text answer:
    the first tool offered (chat's ``{"function": {"name"}}``, the Responses and Messages APIs'
    ``{"name"}``), when the request's text contains ``use-tool``."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or TOOL_TRIGGER not in json.dumps(body.get("messages") or body.get("input") or ""):
        return None
    first = tools[0] if isinstance(tools[0], dict) else {}
    return (first.get("function") or {}).get("name") or first.get("name")


def _pieces(text: str) -> tuple[str, str]:
    half = len(text) // 2
    return text[:half], text[half:]


@dataclass
class Call:
    path: str
    model: str | None
    authorization: str | None
    body: dict[str, Any]
    stream: bool
    status: int
    at: float = field(default_factory=time.time)


@dataclass
class Failure:
    status: int
    remaining: int | None  # None = until cleared
    models: set[str] | None  # None = every model
    message: str = "fake provider failure"


class FakeProvider:
    """Shared state + the ASGI app; methods are thread-safe enough for tests (one lock)."""

    def __init__(self, completion_tokens: int = 8) -> None:
        self.completion_tokens = completion_tokens
        self.calls: list[Call] = []
        self._failures: list[Failure] = []
        self._delays: dict[str | None, float] = {}
        self.chunk_delay = 0.0  # seconds between streamed chunks (a slow stream)
        self.rejected_keys: set[str] = set()
        self._lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._text, methods=["POST"]),
            Route("/completions", self._text, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/responses", self._responses, methods=["POST"]),
            Route("/responses", self._responses, methods=["POST"]),
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/models", self._models, methods=["GET"]),
            # Ollama's model list (what the health prober asks an Ollama endpoint)
            Route("/api/tags", self._ollama_tags, methods=["GET"]),
            Route("/_fake/calls", self._ctl_calls, methods=["GET", "DELETE"]),
            Route("/_fake/fail", self._ctl_fail, methods=["POST", "DELETE"]),
            Route("/_fake/delay", self._ctl_delay, methods=["POST", "DELETE"]),
        ])

    # ---- control ---------------------------------------------------------------------------
    def fail(self, status: int = 500, times: int | None = None, models: set[str] | None = None,
             message: str = "fake provider failure") -> None:
        with self._lock:
            self._failures.append(Failure(status, times, set(models) if models else None, message))

    def set_delay(self, seconds: float, model: str | None = None) -> None:
        with self._lock:
            self._delays[model] = seconds

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._failures.clear()
            self._delays.clear()
            self.chunk_delay = 0.0
            self.rejected_keys.clear()

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()
            self._delays.clear()

    def calls_to(self, model: str | None = None, path_suffix: str = "") -> list[Call]:
        with self._lock:
            return [c for c in self.calls if (model is None or c.model == model)
                    and c.path.endswith(path_suffix)]

    # ---- behaviour -------------------------------------------------------------------------
    def _take_failure(self, model: str | None) -> Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.models is None or model in failure.models:
                    if failure.remaining is not None:
                        failure.remaining -= 1
                        if failure.remaining <= 0:
                            self._failures.remove(failure)
                    return failure
        return None

    async def _prelude(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = {}
        model = body.get("model")
        auth = request.headers.get("authorization")
        if auth is None and request.headers.get("x-api-key") is not None:  # Anthropic's header
            auth = "Bearer " + request.headers["x-api-key"]
        anthropic = request.url.path.endswith("/messages")
        delay = self._delays.get(model, self._delays.get(None, 0.0))
        if delay:
            await asyncio.sleep(delay)
        status = 200
        error: Response | None = None
        token = (auth or "").removeprefix("Bearer ").strip()
        if token in self.rejected_keys:
            status = 401
            error = (_anthropic_error(401, "invalid x-api-key", "authentication_error") if anthropic
                     else _error(401, "Incorrect API key provided", "invalid_api_key"))
        else:
            failure = self._take_failure(model)
            if failure is not None:
                status = failure.status
                error = (_anthropic_error(failure.status, failure.message, "api_error") if anthropic
                         else _error(failure.status, failure.message, "fake_failure"))
        with self._lock:
            self.calls.append(Call(request.url.path, model, auth, body, bool(body.get("stream")), status))
        return body, error

    @staticmethod
    def prompt_tokens(body: dict[str, Any]) -> int:
        """Deterministic token count: one token per 4 characters of message text, at least 1."""
        text = ""
        items = body.get("messages") or []
        # Responses API: ``input`` is a string or a list of items (messages with string or part content)
        if isinstance(body.get("input"), str):
            text += body["input"]
        elif isinstance(body.get("input"), list):
            items = [*items, *body["input"]]
        for message in items:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                text += content
            elif isinstance(content, list):
                text += "".join(p.get("text", "") for p in content if isinstance(p, dict))
        for key in ("prompt", "instructions", "system"):  # text completions, Responses, Anthropic
            if isinstance(body.get(key), str):
                text += body[key]
            elif isinstance(body.get(key), list):
                text += "".join(p.get("text", "") for p in body[key] if isinstance(p, dict))
        return max(1, len(text) // 4)

    def _completion_tokens(self, body: dict[str, Any]) -> int:
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
        return min(self.completion_tokens, limit) if limit else self.completion_tokens

    async def _chat(self, request: Request) -> Response:
        body, error = await self._prelude(request)
        if error is not None:
            return error
        model = body.get("model", "unknown")
        prompt, completion = self.prompt_tokens(body), self._completion_tokens(body)
        choices = body.get("n") if isinstance(body.get("n"), int) and body.get("n") > 1 else 1
        # n choices are n completions, all billed (as OpenAI does): usage counts every one.
        usage = {"prompt_tokens": prompt, "completion_tokens": completion * choices,
                 "total_tokens": prompt + completion * choices}
        words = [f"w{i}" for i in range(completion)]
        created = int(time.time())
        cid = f"chatcmpl-fake-{len(self.calls)}"
        tool = tool_to_call(body)
        call = {"id": f"call_fake{len(self.calls)}", "type": "function",
                "function": {"name": tool, "arguments": TOOL_ARGUMENTS}}
        if not body.get("stream"):
            message = ({"role": "assistant", "content": None, "tool_calls": [call]} if tool
                       else {"role": "assistant", "content": " ".join(words)})
            return JSONResponse({
                # service_tier: LiteLLM 1.102.4's Groq transformation fails on a response without it.
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "service_tier": "on_demand",
                "choices": [{"index": i, "finish_reason": "tool_calls" if tool else "stop", "message": message}
                            for i in range(choices)],
                "usage": usage,
            })

        async def events():
            base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "service_tier": "on_demand"}
            if tool:
                head = {**call, "function": {"name": tool, "arguments": ""}}
                yield _sse({**base, "choices": [{"index": 0, "finish_reason": None, "delta": {
                    "role": "assistant", "content": None, "tool_calls": [{"index": 0, **head}]}}]})
                for piece in _pieces(TOOL_ARGUMENTS):
                    yield _sse({**base, "choices": [{"index": 0, "finish_reason": None, "delta": {
                        "tool_calls": [{"index": 0, "function": {"arguments": piece}}]}}]})
                yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
                yield _sse({**base, "choices": [], "usage": usage})
                yield b"data: [DONE]\n\n"
                return
            yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "finish_reason": None}]})
            for word in words:
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                yield _sse({**base, "choices": [{"index": 0, "delta": {"content": word + " "},
                                                 "finish_reason": None}]})
            yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            yield _sse({**base, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _responses(self, request: Request) -> Response:
        """OpenAI's Responses API: one ``message`` output item; SSE events as OpenAI sends them."""
        body, error = await self._prelude(request)
        if error is not None:
            return error
        model = body.get("model", "unknown")
        prompt, completion = self.prompt_tokens(body), self._completion_tokens(body)
        text = " ".join(f"w{i}" for i in range(completion))
        rid, mid = f"resp_fake{len(self.calls)}", f"msg_fake{len(self.calls)}"
        usage = {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion,
                 "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}

        def response(status: str, output: list[dict[str, Any]], with_usage: bool) -> dict[str, Any]:
            return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
                    "model": model, "output": output, "usage": usage if with_usage else None,
                    "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
                    "max_output_tokens": body.get("max_output_tokens"), "metadata": {},
                    "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
                    "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": body.get("tools") or [],
                    "text": {"format": {"type": "text"}}, "truncation": "disabled", "reasoning": {}}

        item = {"type": "message", "id": mid, "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}
        tool = tool_to_call(body)
        if tool:
            mid = f"fc_fake{len(self.calls)}"
            item = {"type": "function_call", "id": mid, "call_id": f"call_fake{len(self.calls)}",
                    "name": tool, "arguments": TOOL_ARGUMENTS, "status": "completed"}
        if not body.get("stream"):
            return JSONResponse(response("completed", [item], True))

        async def events():
            seq = iter(range(1_000_000))

            def event(kind: str, **fields: Any) -> bytes:
                payload = {"type": kind, "sequence_number": next(seq), **fields}
                return _sse(payload, kind)

            yield event("response.created", response=response("in_progress", [], False))
            yield event("response.in_progress", response=response("in_progress", [], False))
            if tool:
                yield event("response.output_item.added", output_index=0,
                            item={**item, "arguments": "", "status": "in_progress"})
                for piece in _pieces(TOOL_ARGUMENTS):
                    yield event("response.function_call_arguments.delta", item_id=mid, output_index=0, delta=piece)
                yield event("response.function_call_arguments.done", item_id=mid, output_index=0,
                            arguments=TOOL_ARGUMENTS)
                yield event("response.output_item.done", output_index=0, item=item)
                yield event("response.completed", response=response("completed", [item], True))
                return
            yield event("response.output_item.added", output_index=0,
                        item={**item, "status": "in_progress", "content": []})
            yield event("response.content_part.added", item_id=mid, output_index=0, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": []})
            for i in range(completion):
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                yield event("response.output_text.delta", item_id=mid, output_index=0, content_index=0,
                            delta=("" if i == 0 else " ") + f"w{i}")
            yield event("response.output_text.done", item_id=mid, output_index=0, content_index=0, text=text)
            yield event("response.content_part.done", item_id=mid, output_index=0, content_index=0,
                        part=item["content"][0])
            yield event("response.output_item.done", output_index=0, item=item)
            yield event("response.completed", response=response("completed", [item], True))

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _messages(self, request: Request) -> Response:
        """Anthropic's Messages API: one text block; SSE events as Anthropic sends them."""
        body, error = await self._prelude(request)
        if error is not None:
            return error
        model = body.get("model", "unknown")
        prompt, completion = self.prompt_tokens(body), self._completion_tokens(body)
        text = " ".join(f"w{i}" for i in range(completion))
        mid = f"msg_fake{len(self.calls)}"
        usage = {"input_tokens": prompt, "output_tokens": completion,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        tool = tool_to_call(body)
        block = {"type": "tool_use", "id": f"toolu_fake{len(self.calls)}", "name": tool,
                 "input": json.loads(TOOL_ARGUMENTS)}
        if not body.get("stream"):
            return JSONResponse({"id": mid, "type": "message", "role": "assistant", "model": model,
                                 "content": [block if tool else {"type": "text", "text": text}],
                                 "stop_reason": "tool_use" if tool else "end_turn",
                                 "stop_sequence": None, "usage": usage})

        async def events():
            def event(kind: str, **fields: Any) -> bytes:
                return _sse({"type": kind, **fields}, kind)

            yield event("message_start", message={
                "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {**usage, "output_tokens": 1}})
            if tool:
                yield event("content_block_start", index=0, content_block={**block, "input": {}})
                for piece in _pieces(TOOL_ARGUMENTS):
                    yield event("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": piece})
                yield event("content_block_stop", index=0)
                yield event("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None},
                            usage={"output_tokens": completion})
                yield event("message_stop")
                return
            yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
            yield event("ping")
            for i in range(completion):
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                yield event("content_block_delta", index=0,
                            delta={"type": "text_delta", "text": ("" if i == 0 else " ") + f"w{i}"})
            yield event("content_block_stop", index=0)
            yield event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
                        usage={"output_tokens": completion})
            yield event("message_stop")

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _text(self, request: Request) -> Response:
        body, error = await self._prelude(request)
        if error is not None:
            return error
        prompt, completion = self.prompt_tokens(body), self._completion_tokens(body)
        if body.get("stream"):
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

            async def events():
                base = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
                        "model": body.get("model")}
                for i in range(completion):
                    yield _sse({**base, "choices": [{"index": 0, "text": ("" if i == 0 else " ") + f"w{i}",
                                                     "finish_reason": None, "logprobs": None}]})
                yield _sse({**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}]})
                yield _sse({**base, "choices": [], "usage": usage})
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({
            "id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "text": " ".join(f"w{i}" for i in range(completion)),
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })

    async def _embeddings(self, request: Request) -> Response:
        body, error = await self._prelude(request)
        if error is not None:
            return error
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        tokens = self.embedding_tokens(body)
        return JSONResponse({
            "object": "list", "model": body.get("model"),
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                     for i, _ in enumerate(inputs)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    @staticmethod
    def embedding_tokens(body: dict[str, Any]) -> int:
        """Deterministic: one token per 4 characters of each input (at least 1 per input)."""
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        return sum(max(1, len(x) // 4 if isinstance(x, str) else len(x)) for x in inputs)

    async def _models(self, request: Request) -> Response:
        _, error = await self._prelude(request)
        if error is not None:
            return error
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def _ollama_tags(self, request: Request) -> Response:
        _, error = await self._prelude(request)
        if error is not None:
            return error
        return JSONResponse({"models": [{"name": "fake-model:latest", "model": "fake-model:latest"}]})

    # ---- HTTP control (for other processes) ------------------------------------------------
    async def _ctl_calls(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.reset()
            return JSONResponse({"ok": True})
        with self._lock:
            return JSONResponse([asdict(c) for c in self.calls])

    async def _ctl_fail(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_failures()
            return JSONResponse({"ok": True})
        spec = await request.json()
        self.fail(spec.get("status", 500), spec.get("times"), set(spec["models"]) if spec.get("models") else None)
        return JSONResponse({"ok": True})

    async def _ctl_delay(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_failures()
            return JSONResponse({"ok": True})
        spec = await request.json()
        self.set_delay(float(spec["seconds"]), spec.get("model"))
        return JSONResponse({"ok": True})


def _sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event; named (``event: …``) as the Responses and Messages APIs send them."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {
        "message": message, "type": "invalid_request_error" if status < 500 else "server_error",
        "param": None, "code": code}})


def _anthropic_error(status: int, message: str, type_: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"type": "error", "error": {"type": type_, "message": message}})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeProviderServer:
    """Runs a FakeProvider on a loopback port in a thread; ``down()``/``up()`` close and reopen it."""

    def __init__(self, provider: FakeProvider | None = None, port: int | None = None) -> None:
        self.provider = provider or FakeProvider()
        self.port = port or free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def up(self) -> None:
        if self._thread is not None:
            return
        config = uvicorn.Config(self.provider.app, host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("fake provider did not start")
            time.sleep(0.01)

    def down(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--completion-tokens", type=int, default=8)
    args = parser.parse_args()
    uvicorn.run(FakeProvider(args.completion_tokens).app, host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
