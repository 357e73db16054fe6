"""The OpenAPI description: valid OpenAPI 3.1, and the app's routes table exactly, path for
path and method for method, so that the two cannot drift apart; the admin API's answers
fit the schemas it declares."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pypacs.archive import Archive, ArchiveOptions
from pypacs.config import defaults
from pypacs.web.app import DICOMWEB_BASE, create_app
from pypacs.web.openapi import document

from serving import start_pypacs

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Starlette]:
    folder = tmp_path_factory.mktemp("openapi")
    archive = Archive.open(
        ArchiveOptions(
            f"sqlite:///{folder / 'index.sqlite'}",
            str(folder / "blobs"),
            overwrite_duplicates=False,
            reserve_path="",
            reserve_bytes=0,
            max_instance_bytes=0,
            fsync=False,
        )
    )
    try:
        yield create_app(archive, defaults().web_options())
    finally:
        archive.close()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A client of a running pypacs (empty)."""
    srv = start_pypacs(tmp_path_factory.mktemp("openapi-server") / "data")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}") as client:
            yield client
    finally:
        srv.kill()


@pytest.fixture(scope="module")
def spec(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def test_the_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    validate(spec, cls=OpenAPIV31SpecValidator)


def test_the_served_spec_is_the_document(spec: dict[str, Any]) -> None:
    assert spec == document(DICOMWEB_BASE, "/api")


def _route_operations(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    operations: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route):
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)
            # Starlette answers HEAD wherever GET is allowed; the spec lists GET.
            methods = {m.lower() for m in route.methods or ()} - {"head"}
            operations |= {(path, method) for method in methods}
        elif isinstance(route, Mount):
            operations |= _route_operations(route.routes, prefix + route.path)
        else:
            raise AssertionError(f"a route the spec test does not know: {route!r}")
    return operations


def _spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_is_described_and_nothing_else(app: Starlette, spec: dict[str, Any]) -> None:
    in_app = _route_operations(app.routes)
    # What no route takes goes to the web page's files, the page itself at "/".
    assert isinstance(app.router.default, StaticFiles)
    in_app.add(("/", "get"))
    in_spec = _spec_operations(spec)
    assert sorted(in_app - in_spec) == [], "routes the spec does not describe"
    assert sorted(in_spec - in_app) == [], "described operations the app does not route"


def _resolve(spec: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        node: Any = spec
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        item = node
    return item


def test_path_parameters_are_the_path_templates(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        in_template = set(re.findall(r"\{(\w+)\}", path))
        for method in set(item) & METHODS:
            params = [_resolve(spec, p) for p in item[method].get("parameters", [])]
            declared = {p["name"] for p in params if p["in"] == "path"}
            assert declared == in_template, f"{method.upper()} {path}"
            assert all(p["required"] for p in params if p["in"] == "path")


def _validator(spec: dict[str, Any], schema: str) -> Draft202012Validator:
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:pypacs-openapi", resource)
    ref = {"$ref": f"urn:pypacs-openapi#/components/schemas/{schema}"}
    return Draft202012Validator(ref, registry=registry)


@pytest.mark.parametrize(
    ("url", "schema", "expected"),
    [
        (
            "/api/statistics",
            "Stats",
            {"patients": 0, "studies": 0, "series": 0, "instances": 0, "bytes": 0},
        ),
        ("/api/jobs/1-0", "Error", None),
        ("/api/studies/1.2.3/archive.zip", "Error", None),
    ],
)
def test_answers_fit_their_schemas(
    client: httpx.Client, spec: dict[str, Any], url: str, schema: str, expected: Any
) -> None:
    body = client.get(url).json()
    if expected is not None:
        assert body == expected
    _validator(spec, schema).validate(body)


def test_health_fits_its_schema(client: httpx.Client, spec: dict[str, Any]) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    _validator(spec, "Health").validate(body)


def test_a_schema_rejects_what_does_not_fit(spec: dict[str, Any]) -> None:
    errors = list(_validator(spec, "Stats").iter_errors({"patients": "many"}))
    assert {e.validator for e in errors} == {"type", "required"}


def test_the_page_is_served_from_the_package(client: httpx.Client) -> None:
    ui = files("pypacs.web.page") / "static"
    for name in ("index.html", "app.js", "style.css"):
        assert ui.joinpath(name).is_file(), name
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == Path(str(ui / "index.html")).read_text()
    script = client.get("/app.js")
    assert script.headers["content-type"].split(";")[0] in {
        "text/javascript",
        "application/javascript",
    }
    assert script.text == Path(str(ui / "app.js")).read_text()
    missing = client.get("/nothing-here.html")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"status": 404, "code": "not-found", "message": "nothing at /nothing-here.html"}
    }
