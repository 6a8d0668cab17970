"""The HTTP server of ``loraclf serve``: FastAPI routes on uvicorn, the key, the limits, the drain.

Routes: ``POST /predict`` and ``POST /models/{name}/predict`` (wire formats in :mod:`loraclf.serving.wire`),
``GET /info`` (the runs and limits), ``GET /health`` (never behind the key: load balancers and orchestrators probe
without credentials) and ``GET /metrics`` (Prometheus text).

Safe by default: with a key set, every route but ``/health`` needs ``Authorization: Bearer KEY`` (compared in
constant time); a body over the byte limit is refused from its ``Content-Length`` before it is read, or as soon as a
streamed body passes the limit; every refusal is a 4xx JSON error saying what was wrong, and an unexpected failure
is a 500 that says only "see the server log" (the traceback goes to the log, never to the client). On SIGTERM
uvicorn stops accepting connections, lets the requests in flight finish (up to the drain timeout), then the batcher
stops and the command returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from loraclf.serving.batching import Batcher
from loraclf.serving.metrics import UNKNOWN, Metrics
from loraclf.serving.registry import Registry, TooLong, note
from loraclf.serving.wire import ApiError, answer, parse_predict
from loraclf.utils.errors import did_you_mean, short_list

ROUTES = "POST /predict, POST /models/{name}/predict, GET /info, GET /health, GET /metrics"
OPEN_PATHS = ("/health",)


@dataclass(frozen=True)
class Limits:
    """The server's settings (``loraclf serve`` flags)."""

    api_key: str | None = None
    max_body_bytes: int = 2_000_000
    max_inputs: int = 64
    max_batch_tokens: int = 16_384
    max_wait_ms: float = 5.0
    queue_size: int = 1024
    rescan_seconds: float = 10.0


def error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


class Guard:
    """ASGI middleware: the bearer key on every route but ``/health``, and the body limit by ``Content-Length``."""

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits
        self.key = limits.api_key.encode() if limits.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self.check(scope)
            if refusal is not None:
                return await error(refusal)(scope, receive, send)
        return await self.app(scope, receive, send)

    def check(self, scope) -> ApiError | None:
        headers = dict(scope["headers"])
        if self.key is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not given:
                return ApiError(
                    401, "this server needs an API key: send the header 'Authorization: Bearer KEY'",
                    "Unauthorized", {"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                return ApiError(401, "the API key is wrong", "Unauthorized", {"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limits.max_body_bytes:
            return _too_big(self.limits)
        return None


def _too_big(limits: Limits) -> ApiError:
    return ApiError(
        413, f"the body is over {limits.max_body_bytes:,} bytes, this server's limit; send fewer texts"
    )


async def read_json(request: Request, limits: Limits):
    """The request body decoded as JSON, read no further than the byte limit.

    Raises:
        ApiError: 413 over the limit; 400 empty or not JSON (with where the JSON broke).
    """
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _too_big(limits)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, 'the body is empty; send JSON such as {"inputs": "some text"}')
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"the body is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"the body is not JSON that can be read ({type(exc).__name__})") from None


class Service:
    """What the routes share: the runs, the batcher, the metrics and the limits."""

    def __init__(self, registry: Registry, limits: Limits):
        self.registry, self.limits = registry, limits
        self.metrics = Metrics()
        self.batcher = Batcher(
            limits.max_batch_tokens, limits.max_wait_ms / 1000, limits.queue_size, self.metrics
        )

    async def member(self, name: str | None):
        """The run a request names (or the only one served), rescanning the served folders on a miss.

        Raises:
            ApiError: 404 no such run (or it was refused, and why); 422 no name while several runs are served.
        """
        registry = self.registry
        if name is None:
            if len(registry.members) == 1:
                return next(iter(registry.members.values()))
            raise ApiError(
                422, f"this server serves {len(registry.members)} runs; name one with 'model' or "
                f"POST /models/{{name}}/predict: {short_list(sorted(registry.members))}",
            )  # fmt: skip
        found = registry.get(name)
        if found is None and registry.folders:
            await run_in_threadpool(registry.scan)
            self.metrics.models.set(len(registry.members))
            found = registry.get(name)
        if found is not None:
            return found
        why = registry.refusal(name)
        if why is not None:
            raise ApiError(404, f"run '{name}' is not served: {why}", "NotFound")
        served = sorted(registry.members)
        raise ApiError(
            404, f"no run named '{name}' is served{did_you_mean(name, served)}; served: {short_list(served)}",
            "NotFound",
        )  # fmt: skip

    async def predict(self, request: Request, name: str | None) -> JSONResponse:
        start, label, status = time.perf_counter(), UNKNOWN, 500
        try:
            asked = parse_predict(await read_json(request, self.limits), name)
            if len(asked.texts) > self.limits.max_inputs:
                raise ApiError(
                    413,
                    f"{len(asked.texts)} inputs in one request; this server takes at most {self.limits.max_inputs}",
                )
            member = await self.member(asked.model)
            label = member.name
            ids = await run_in_threadpool(_encode, member, asked.texts, asked.truncate)
            logits = await self.batcher.submit(member, ids)
            status = 200
            return JSONResponse(answer(asked, logits, member.labels))
        except ApiError as exc:
            status = exc.status
            return error(exc)
        finally:
            self.metrics.request(label, status, time.perf_counter() - start)

    def info(self) -> dict:
        from loraclf.utils.version import __version__

        members = [m.describe() for m in self.registry.members.values()]
        out = {"version": __version__, "models": members}
        if len(members) == 1:  # text-embeddings-inference's fields for its one model
            labels = members[0]["labels"]
            out["model_id"] = members[0]["name"]
            out["model_type"] = {
                "classifier": {
                    "id2label": dict(enumerate(labels)),
                    "label2id": {x: i for i, x in enumerate(labels)},
                }
            }
            out["max_input_length"] = members[0]["max_input_length"]
        lim = self.limits
        out |= {
            "max_client_batch_size": lim.max_inputs, "max_batch_tokens": lim.max_batch_tokens,
            "max_wait_ms": lim.max_wait_ms, "max_queue_size": lim.queue_size, "max_body_bytes": lim.max_body_bytes,
            "auto_truncate": True, "auth": lim.api_key is not None,
        }  # fmt: skip
        return out


def _encode(member, texts: list[str], truncate: bool):
    try:
        return member.encode(texts, truncate)
    except TooLong as exc:
        raise ApiError(
            413, f"inputs[{exc.index}] has {exc.tokens} tokens; run '{member.name}' reads at most {exc.limit} "
            "(send truncate=true to cut it as the run was trained)",
        ) from None  # fmt: skip


async def _rescan_every(service: Service) -> None:
    """Scan the served folders every ``rescan_seconds`` (new runs become servable without a request for them)."""
    while True:
        await asyncio.sleep(service.limits.rescan_seconds)
        await run_in_threadpool(service.registry.scan)
        service.metrics.models.set(len(service.registry.members))


def create_app(service: Service) -> Guard:
    """The ASGI application over ``service``: the FastAPI routes behind :class:`Guard`."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        service.metrics.models.set(len(service.registry.members))
        rescan = None
        if service.registry.folders and service.limits.rescan_seconds > 0:
            rescan = asyncio.get_running_loop().create_task(_rescan_every(service))
        yield
        if rescan is not None:
            rescan.cancel()
        await service.batcher.stop()

    app = FastAPI(title="loraclf serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; routes: {ROUTES}"
            return error(ApiError(404, message, "NotFound"))
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; routes: {ROUTES}"
            return error(ApiError(405, message, "Validation", dict(exc.headers or {})))
        return error(ApiError(exc.status_code, str(exc.detail), "Validation"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        # Starlette re-raises the exception after this answer, and uvicorn logs its traceback: the log gets it, the
        # client never does.
        return error(ApiError(500, "internal error; see the server log", "Backend"))

    @app.post("/predict")
    async def predict(request: Request):
        return await service.predict(request, None)

    @app.post("/models/{name}/predict")
    async def predict_named(request: Request, name: str):
        return await service.predict(request, name)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": len(service.registry.members)}

    @app.get("/info")
    async def info():
        return service.info()

    @app.get("/metrics")
    async def metrics():
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    return Guard(app, service.limits)


def run(service: Service, sock, drain_seconds: float, access_log: bool, on_ready) -> None:
    """Serve on the bound, listening socket until SIGTERM or SIGINT; returns once the requests have drained."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                on_ready()

        def handle_exit(self, sig, frame):
            if not self.should_exit:
                note(
                    f"stopping: finishing {len(self.server_state.tasks)} request(s) in flight, accepting no more"
                )
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        create_app(service), log_level="warning", access_log=access_log, lifespan="on",
        timeout_graceful_shutdown=drain_seconds, server_header=False,
    )  # fmt: skip
    Server(config).run(sockets=[sock])
