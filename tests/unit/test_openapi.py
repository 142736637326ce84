"""The OpenAPI document: valid 3.1 by an independent validator, made from the routes, naming each."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from openapi_spec_validator import validate

from progress import openapi


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build("test", "1")


def test_openapi_document_validates(document):
    validate(document)


def test_openapi_every_route_of_progress_and_transcription_is_documented():
    assert openapi.undocumented() == []


def test_openapi_names_every_route(document):
    paths = {path for path, _ in openapi.routes()}
    assert paths <= set(document["paths"])
    for path in (
        "/api/tasks/{task_id}/",
        "/api/tasks/",
        "/api/tasks/{task_id}/result.{fmt}",
        "/api/uploads/",
    ):
        assert path in document["paths"], path


def test_openapi_path_templates_from_patterns():
    assert openapi._path(r"api/tasks/(?P<task_id>[^/]+)/result\.(?P<fmt>[a-z0-9]{1,8})") == (
        "/api/tasks/{task_id}/result.{fmt}"
    )
    assert openapi._path(r"api/tasks/(?P<task_id>[A-Za-z0-9_-]{1,64})/?") == "/api/tasks/{task_id}/"
    assert openapi._path("") == "/"


def test_openapi_bodies_come_from_the_models(document):
    upload = document["paths"]["/api/tasks/"]["post"]
    assert upload["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/TaskLinks")
    assert set(upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]) == {
        "file",
        "callback_url",
    }
    schemas = document["components"]["schemas"]
    assert {"SnapshotMessage", "TaskLinks", "ApiError", "ServerMessage"} <= set(schemas)
    assert document["x-websocket"]["path"] == "/ws/tasks/{task_id}/"


@pytest.mark.django_db
def test_openapi_is_served(document):
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    served = response.json()
    assert served["openapi"] == "3.1.0"
    assert set(served["paths"]) == set(document["paths"])
