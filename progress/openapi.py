"""The OpenAPI 3.1 description of a project's HTTP routes, made from its URL patterns, the
operations each view declares (``@operation``), and the pydantic models of their bodies.

Nothing is kept by hand beside the code: a route's path and parameters come from its pattern, its
bodies from models, and ``undocumented()`` lists the routes whose view declares nothing (a test
keeps it empty). The WebSocket protocol is under ``x-websocket``, with its frames' schemas.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.urls import URLPattern, URLResolver, get_resolver
from pydantic import BaseModel, TypeAdapter

from .schemas import PingMessage, ServerMessage

__all__ = ["Media", "Operation", "build", "declare", "operation", "routes", "undocumented"]

V = TypeVar("V", bound=Callable[..., Any])
_GROUP = re.compile(r"\(\?P<(\w+)>")


@dataclass(frozen=True)
class Media:
    """A body that is not a model's JSON: its media type and what it is."""

    media_type: str
    description: str


Body = type[BaseModel] | Media


@dataclass(frozen=True)
class Operation:
    """One method of a route: what it does, what it answers, what it takes."""

    method: str
    summary: str
    responses: Mapping[int, Body | str]
    """Status → a model (JSON), a ``Media``, or a description (no body, or an error's JSON)."""
    form: Mapping[str, str] = field(default_factory=dict)
    """Multipart form fields → their description (``file`` is binary)."""
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    """Request headers → their description."""
    auth: tuple[str, ...] = ("session", "bearer")


def operation(*operations: Operation) -> Callable[[V], V]:
    """Declare what a view does, for the OpenAPI document (outermost, above Django's decorators)."""

    def mark(view: V) -> V:
        view.openapi = (*getattr(view, "openapi", ()), *operations)  # type: ignore[attr-defined]
        return view

    return mark


class ApiError(BaseModel):
    """Every refusal's body: a stable code, and a sentence for people."""

    error: str
    detail: str


def _walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for entry in patterns:
        raw = str(entry.pattern.regex.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + raw.lstrip("^").rstrip("$"))
        elif isinstance(entry, URLPattern):
            yield prefix + raw.lstrip("^").rstrip("$"), entry.callback


def _path(regex: str) -> str:
    """An OpenAPI path template from a route's regex: ``(?P<task_id>...)`` → ``{task_id}``."""
    out, i = [], 0
    while i < len(regex):
        match = _GROUP.match(regex, i)
        if match is None:
            out.append(regex[i])
            i += 1
            continue
        depth, j = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(regex[j], 0) if regex[j - 1] != "\\" else 0
            j += 1
        out.append("{" + match.group(1) + "}")
        i = j
    path = "".join(out).replace("/?", "/").replace("\\.", ".")
    return "/" + path


def routes(prefixes: tuple[str, ...] = ("progress.", "transcription.")) -> list[tuple[str, Any]]:
    """(OpenAPI path, view) of every route whose view is in one of these packages."""
    found = []
    for regex, view in _walk(get_resolver().url_patterns, ""):
        module = getattr(view, "__module__", "") or ""
        if module.startswith(prefixes):
            found.append((_path(regex), view))
    return found


_declared: dict[str, tuple[Operation, ...]] = {}


def declare(path: str, *operations: Operation) -> None:
    """Describe a route served outside Django's URL patterns (an ASGI app before Django)."""
    _declared[path] = operations


def undocumented() -> list[str]:
    """The routes whose view declares no operation."""
    return [path for path, view in routes() if not getattr(view, "openapi", ())]


def _schema(models: dict[str, Any], body: Body) -> dict[str, Any]:
    if isinstance(body, Media):
        return {body.media_type: {"schema": {"type": "string"}}}
    schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
    models.update(schema.pop("$defs", {}))
    models[body.__name__] = schema
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}


def _operation(models: dict[str, Any], path: str, op: Operation) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    params += [
        {"name": name, "in": where, "required": False, "schema": {"type": "string"}, "description": text}
        for where, named in (("query", op.query), ("header", op.headers))
        for name, text in named.items()
    ]
    responses: dict[str, Any] = {}
    for status, body in op.responses.items():
        if isinstance(body, str):
            error = {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}
            responses[str(status)] = {"description": body, **({"content": error} if status >= 400 else {})}
        else:
            described = body.description if isinstance(body, Media) else (body.__doc__ or body.__name__)
            responses[str(status)] = {"description": described.strip(), "content": _schema(models, body)}
    result: dict[str, Any] = {"summary": op.summary, "responses": responses, "parameters": params}
    result["security"] = [{scheme: []} for scheme in op.auth] or [{}]
    if op.form:
        properties = {
            name: {
                "type": "string",
                "description": text,
                **({"contentMediaType": "audio/*"} if name == "file" else {}),
            }
            for name, text in op.form.items()
        }
        result["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": {"type": "object", "properties": properties}}},
        }
    return result


def build(title: str = "API", version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented route of ``progress`` and ``transcription``."""
    models: dict[str, Any] = {"ApiError": ApiError.model_json_schema()}
    paths: dict[str, dict[str, Any]] = {}
    declared = [(path, ops) for path, ops in _declared.items()]
    for path, ops in [(path, getattr(view, "openapi", ())) for path, view in routes()] + declared:
        for op in ops:
            paths.setdefault(path, {})[op.method.lower()] = _operation(models, path, op)
    frames = TypeAdapter(ServerMessage).json_schema(ref_template="#/components/schemas/{model}")
    models.update(frames.pop("$defs", {}))
    models["ServerMessage"] = frames
    models["PingMessage"] = PingMessage.model_json_schema()
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": "HTTP routes; the socket: x-websocket."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": models,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key"},
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
                "token": {"type": "apiKey", "in": "query", "name": "token", "description": "a watch token"},
            },
        },
        "x-websocket": {
            "path": "/ws/tasks/{task_id}/",
            "query": {"token": "a watch token", "last_seq": "resume after this seq"},
            "server": {"$ref": "#/components/schemas/ServerMessage"},
            "client": {"$ref": "#/components/schemas/PingMessage"},
            "description": "docs/protocol.md: ordering, resume, close codes.",
        },
    }
