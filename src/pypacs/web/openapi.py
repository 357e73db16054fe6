"""The OpenAPI 3.1 description of the HTTP side: DICOMweb (PS3.18) and the admin API.

A test holds it to the app's routes table, path for path and method for method.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

import pypacs

DICOM_JSON = "application/dicom+json"
_MULTIPART = 'multipart/related; type="application/dicom"'
_JSON = "application/json"

_ERROR = {"$ref": "#/components/responses/Error"}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _ERROR for status in statuses}


def _json(description: str, schema: dict[str, Any], media: str = _JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _binary(description: str, *media: str) -> dict[str, Any]:
    schema = {"type": "string", "contentMediaType": media[0]}
    return {"description": description, "content": {m: {"schema": schema} for m in media}}


def _op(
    summary: str, tag: str, responses: dict[str, Any], params: list[Any] | None = None, **more: Any
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        operation["parameters"] = params
    operation.update(more)
    return operation


_PATH = {name: _ref("parameters", name) for name in ("study", "series", "instance", "frames")}
_SEARCH_PARAMS = [
    _ref("parameters", name)
    for name in ("match", "includefield", "fuzzymatching", "limit", "offset", "orderby", "total")
]


_RENDERED_PARAMS = [_ref("parameters", name) for name in ("viewport", "window", "quality")]
_THUMBNAIL_PARAMS = [_ref("parameters", "thumbnail-viewport")]


def _levels(*names: str) -> list[Any]:
    return [_PATH[name] for name in names]


def _qido(level: str, scope: tuple[str, ...]) -> dict[str, Any]:
    where = f" of {scope[-1]} {{{scope[-1]}}}" if scope else ""
    return {
        "get": _op(
            f"Search for {level}{where} (QIDO-RS, PS3.18 10.6)",
            "QIDO-RS",
            {
                "200": _json(
                    "the matches, as DICOM JSON",
                    {"type": "array", "items": _ref("schemas", "DicomJson")},
                    DICOM_JSON,
                ),
                "204": {"description": "no match"},
                **_errors(400, 406, 413),
            },
            [*_levels(*scope), *_SEARCH_PARAMS],
        )
    }


def _wado(scope: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Retrieve, metadata, rendered and thumbnail resources of one level (PS3.18 10.4)."""
    what = scope[-1]
    params = _levels(*scope)
    paths: dict[str, dict[str, Any]] = {}
    if what != "frames":
        paths[""] = {
            "get": _op(
                f"Retrieve the {what}'s instances (WADO-RS, PS3.18 10.4)",
                "WADO-RS",
                {
                    "200": _binary("the instances as stored", _MULTIPART),
                    **_errors(400, 404, 406),
                },
                params,
            )
        }
        paths["/metadata"] = {
            "get": _op(
                f"The {what}'s instances' metadata (WADO-RS, PS3.18 10.4)",
                "WADO-RS",
                {
                    "200": _json(
                        "one DICOM JSON object per instance",
                        {"type": "array", "items": _ref("schemas", "DicomJson")},
                        DICOM_JSON,
                    ),
                    **_errors(400, 404, 406),
                },
                params,
            )
        }
    else:
        paths[""] = {
            "get": _op(
                "Retrieve frames' pixel data (WADO-RS, PS3.18 10.4)",
                "WADO-RS",
                {
                    "200": _binary(
                        "the frames",
                        'multipart/related; type="application/octet-stream"',
                    ),
                    **_errors(400, 404, 406),
                },
                params,
            )
        }
    for resource, summary in (("rendered", "rendered"), ("thumbnail", "as a thumbnail")):
        paths[f"/{resource}"] = {
            "get": _op(
                f"The {what} {summary}, as an image (PS3.18 10.4.1.1.3)",
                "WADO-RS",
                {
                    "200": _binary("the image", "image/jpeg", "image/png"),
                    **_errors(400, 404, 406),
                },
                [*params, *(_THUMBNAIL_PARAMS if resource == "thumbnail" else _RENDERED_PARAMS)],
            )
        }
    return paths


def _dicomweb(base: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    study = f"{base}/studies/{{study}}"
    series = f"{study}/series/{{series}}"
    instance = f"{series}/instances/{{instance}}"
    paths[f"{base}/studies"] = {
        **_qido("studies", ()),
        "post": _op(
            "Store instances (STOW-RS, PS3.18 10.5)",
            "STOW-RS",
            {
                "200": _json("all stored", _ref("schemas", "DicomJson"), DICOM_JSON),
                "202": _json("some stored, some not", _ref("schemas", "DicomJson"), DICOM_JSON),
                "409": _json("none stored", _ref("schemas", "DicomJson"), DICOM_JSON),
                **_errors(400, 413, 415),
            },
            requestBody={"required": True, "content": {_MULTIPART: {"schema": {}}}},
        ),
    }
    paths[f"{base}/patients"] = _qido("patients", ())
    paths[f"{base}/patients"]["get"]["summary"] = "Search for patients (a pypacs extension)"
    paths[f"{base}/series"] = _qido("series", ())
    paths[f"{base}/instances"] = _qido("instances", ())
    for url, scope in (
        (study, ("study",)),
        (series, ("study", "series")),
        (instance, ("study", "series", "instance")),
        (f"{instance}/frames/{{frames}}", ("study", "series", "instance", "frames")),
    ):
        for suffix, item in _wado(scope).items():
            paths.setdefault(url + suffix, {}).update(item)
    paths[study]["post"] = _op(
        "Store instances of this study (STOW-RS, PS3.18 10.5)",
        "STOW-RS",
        paths[f"{base}/studies"]["post"]["responses"],
        _levels("study"),
        requestBody=paths[f"{base}/studies"]["post"]["requestBody"],
    )
    for url, scope in (
        (study, ("study",)),
        (series, ("study", "series")),
        (instance, ("study", "series", "instance")),
    ):
        paths[url]["delete"] = _op(
            f"Delete the {scope[-1]} and everything under it",
            "DELETE",
            {"204": {"description": "deleted"}, **_errors(400, 404)},
            _levels(*scope),
        )
    paths[f"{study}/series"] = _qido("series", ("study",))
    paths[f"{study}/instances"] = _qido("instances", ("study",))
    paths[f"{series}/instances"] = _qido("instances", ("study", "series"))
    paths[f"{instance}/bulkdata/{{tag}}"] = {
        "get": _op(
            "One bulk data element of the instance (WADO-RS, PS3.18 10.4)",
            "WADO-RS",
            {
                "200": _binary("the value", 'multipart/related; type="application/octet-stream"'),
                **_errors(400, 404, 406),
            },
            [
                *_levels("study", "series", "instance"),
                {
                    "name": "tag",
                    "in": "path",
                    "required": True,
                    "description": "the element's tag, 8 hexadecimal digits",
                    "schema": {"type": "string", "pattern": "^[0-9A-Fa-f]{8}$"},
                },
            ],
        )
    }
    return paths


def _wado_uri() -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": required, "schema": schema}

    uid = _uid_param("", "")["schema"]
    positive = {"type": "integer", "minimum": 1}
    return {
        "/wado": {
            "get": _op(
                "One instance by its UIDs (WADO-URI, PS3.18 9)",
                "WADO-URI",
                {
                    "200": _binary(
                        "the instance, or it rendered",
                        "application/dicom",
                        "image/jpeg",
                        "image/png",
                    ),
                    **_errors(400, 404, 406),
                },
                [
                    query("requestType", {"const": "WADO"}, required=True),
                    *(
                        query(key, uid, required=True)
                        for key in ("studyUID", "seriesUID", "objectUID")
                    ),
                    query("contentType", {"type": "string"}),
                    query("transferSyntax", uid),
                    query("rows", positive),
                    query("columns", positive),
                    query(
                        "region", {"type": "string", "description": "x1,y1,x2,y2 from 0.0 to 1.0"}
                    ),
                    query("windowCenter", {"type": "number"}),
                    query("windowWidth", {"type": "number", "minimum": 1}),
                    query("frameNumber", positive),
                    query("imageQuality", {**positive, "maximum": 100}),
                ],
            )
        }
    }


def _admin(base: str) -> dict[str, Any]:
    remote = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        f"{base}/health": {
            "get": _op("Is the server up", "admin", {"200": _json("up", _ref("schemas", "Health"))})
        },
        f"{base}/openapi.json": {
            "get": _op("This description", "admin", {"200": _json("OpenAPI 3.1", {})})
        },
        f"{base}/statistics": {
            "get": _op(
                "What the archive holds",
                "admin",
                {"200": _json("counts", _ref("schemas", "Stats"))},
            )
        },
        f"{base}/ingest": {
            "get": _op(
                "Instances received per minute over the last hour, or per hour over the last day",
                "admin",
                {"200": _json("the counts", {"type": "object"}), **_errors(400)},
                [
                    {
                        "name": "span",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["hour", "day"]},
                    }
                ],
            )
        },
        f"{base}/conflicts": {
            "get": _op(
                "Demographics conflicts: received patient details that differ from the stored",
                "admin",
                {"200": _json("the conflicts", {"type": "object"}), **_errors(400, 403)},
                [
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                ],
            )
        },
        f"{base}/remotes": {
            "get": _op(
                "The configured remote AEs ([remotes.NAME] tables)",
                "admin",
                {"200": _json("remotes", {"type": "array", "items": _ref("schemas", "Remote")})},
            )
        },
        f"{base}/remotes/{{name}}/echo": {
            "post": _op(
                "C-ECHO the remote (PS3.7 9.1.5)",
                "admin",
                {"200": _json("the outcome", _ref("schemas", "Echo")), **_errors(403, 404, 415)},
                [remote],
                # Content-Type: application/json is required, as on every admin POST.
                requestBody={"required": False, "content": {_JSON: {"schema": {}}}},
            )
        },
        f"{base}/remotes/{{name}}/move": {
            "post": _op(
                "Send a study to the remote (C-STORE to it); runs as a job",
                "admin",
                {
                    "202": _json("started", _ref("schemas", "Job")),
                    **_errors(400, 403, 404, 413, 415, 503),
                },
                [remote],
                requestBody={
                    "required": True,
                    "content": {_JSON: {"schema": _ref("schemas", "MoveRequest")}},
                },
            )
        },
        f"{base}/jobs/{{job}}": {
            "get": _op(
                "A job's progress; jobs are kept in the index, so any node answers",
                "admin",
                {"200": _json("the job", _ref("schemas", "Job")), **_errors(404)},
                [{"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}],
            )
        },
        f"{base}/studies/{{study}}/archive.zip": {
            "get": _op(
                "The study's stored files, as received, in one ZIP",
                "admin",
                {"200": _binary("the ZIP", "application/zip"), **_errors(400, 404)},
                [_PATH["study"]],
            )
        },
    }


def _session(base: str) -> dict[str, Any]:
    """The log-in of the web page and the liveness probe (web/admin/session.py)."""
    obj = {"type": "object"}
    login = {"type": "object", "properties": {"name": {"type": "string"}, "password": {}}}
    form = "application/x-www-form-urlencoded"
    return {
        "/healthz": {
            "get": _op("Is the server up (no counts; public)", "admin", {"200": _json("ok", obj)})
        },
        "/login": {
            "get": _op(
                "The log-in page",
                "page",
                {"200": {"description": "HTML", "content": {"text/html": {}}}},
            )
        },
        f"{base}/session": {
            "get": _op(
                "Who the request acts for", "admin", {"200": _json("the user", obj), **_errors(401)}
            ),
            "post": _op(
                "Log in ([auth] mode local): sets the session cookie",
                "admin",
                {"200": _json("the user", obj), **_errors(400, 401, 415, 429)},
                requestBody={
                    "required": True,
                    "content": {_JSON: {"schema": login}, form: {"schema": login}},
                },
            ),
            "delete": _op("Log out: ends the session", "admin", {"204": {"description": "done"}}),
        },
    }


def _viewer(base: str) -> dict[str, Any]:
    """The installed OHIF viewer (web/page/viewer.py); its files under /viewer/ are no API."""
    about = {
        "type": "object",
        "required": ["installed", "version", "url", "study_url", "series_url"],
        "properties": {
            "installed": {"const": True},
            "version": {"type": "string"},
            "url": {"type": "string"},
            "study_url": {"type": "string", "description": "with {study} to replace"},
            "series_url": {"type": "string", "description": "with {study} and {series}"},
        },
    }
    return {
        f"{base}/viewer": {
            "get": _op(
                "Whether the OHIF viewer is installed, and how to open a study in it",
                "page",
                {"200": _json("installed", about), **_errors(404)},
            )
        }
    }


def _uid_param(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": what,
        "schema": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)*$", "maxLength": 64},
    }


def _components() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    nullable_count = {"type": ["integer", "null"], "minimum": 0}
    text = {"type": "string"}
    nullable_text = {"type": ["string", "null"]}
    return {
        "parameters": {
            "study": _uid_param("study", "Study Instance UID"),
            "series": _uid_param("series", "Series Instance UID"),
            "instance": _uid_param("instance", "SOP Instance UID"),
            "frames": {
                "name": "frames",
                "in": "path",
                "required": True,
                "description": "frame numbers from 1, separated by commas",
                "schema": {"type": "string", "pattern": r"^[0-9]+(,[0-9]+)*$"},
            },
            "match": {
                "name": "match",
                "in": "query",
                "description": "attribute matching (PS3.18 8.3.4.1): keyword or tag = value, "
                "e.g. PatientName=SMITH*, StudyDate=20240101-20240131, ModalitiesInStudy=CT",
                "style": "form",
                "explode": True,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "includefield": {
                "name": "includefield",
                "in": "query",
                "description": "attributes to return besides the defaults, or 'all'",
                "schema": {"type": "array", "items": text},
                "style": "form",
                "explode": True,
            },
            "fuzzymatching": {
                "name": "fuzzymatching",
                "in": "query",
                "schema": {"type": "boolean"},
            },
            "limit": {"name": "limit", "in": "query", "schema": count},
            "orderby": {
                "name": "orderby",
                "in": "query",
                "description": "pypacs extension: keys to order by, comma-separated, "
                "'-' for descending (e.g. PatientName,-StudyDate)",
                "schema": {"type": "string"},
            },
            "total": {
                "name": "total",
                "in": "query",
                "description": "pypacs extension: true answers X-Total-Count, the number of "
                "matches whatever limit and offset (when every key is matched in SQL)",
                "schema": {"type": "boolean"},
            },
            "offset": {"name": "offset", "in": "query", "schema": count},
            "viewport": {
                "name": "viewport",
                "in": "query",
                "description": "vw,vh or vw,vh,sx,sy,sw,sh (PS3.18 8.3.5.1.3)",
                "schema": {"type": "string", "pattern": r"^[0-9]+,[0-9]+(,-?[0-9]+){0,4}$"},
            },
            "thumbnail-viewport": {
                "name": "viewport",
                "in": "query",
                "description": "vw,vh: the thumbnail fits in it (128,128 when not given)",
                "schema": {"type": "string", "pattern": r"^[0-9]+,[0-9]+$"},
            },
            "window": {
                "name": "window",
                "in": "query",
                "description": "center,width,function (PS3.18 8.3.5.1.4)",
                "schema": {"type": "string"},
            },
            "quality": {
                "name": "quality",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": 100},
            },
        },
        "responses": {
            "Error": _json("the one error shape", _ref("schemas", "Error")),
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["status", "code", "message"],
                        "properties": {
                            "status": {"type": "integer"},
                            "code": text,
                            "message": text,
                            "parameter": {
                                "type": "string",
                                "description": "the parameter, path segment, header or "
                                "body field at fault",
                            },
                        },
                    }
                },
            },
            "DicomJson": {
                "type": "object",
                "description": "a DICOM JSON data set (PS3.18 F.2), keyed by tag",
                "propertyNames": {"pattern": "^[0-9A-F]{8}$"},
                "additionalProperties": {
                    "type": "object",
                    "required": ["vr"],
                    "properties": {
                        "vr": {"type": "string", "pattern": "^[A-Z]{2}$"},
                        "Value": {"type": "array"},
                        "BulkDataURI": text,
                        "InlineBinary": text,
                    },
                },
            },
            "Health": {
                "type": "object",
                "properties": {
                    "status": {"const": "ok"},
                    "version": text,
                    **{k: count for k in ("patients", "studies", "series", "instances", "bytes")},
                },
            },
            "Stats": {
                "type": "object",
                "required": ["patients", "studies", "series", "instances", "bytes"],
                "properties": {
                    k: count for k in ("patients", "studies", "series", "instances", "bytes")
                },
            },
            "Remote": {
                "type": "object",
                "required": ["name", "ae_title", "host", "port"],
                "properties": {
                    "name": text,
                    "ae_title": text,
                    "host": text,
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                },
            },
            "Echo": {
                "type": "object",
                "required": ["remote", "ok", "status", "milliseconds", "error"],
                "properties": {
                    "remote": text,
                    "ok": {"type": "boolean"},
                    "status": {**nullable_text, "description": "DIMSE status, 0xHHHH"},
                    "milliseconds": {"type": ["number", "null"]},
                    "error": nullable_text,
                },
            },
            "MoveRequest": {
                "type": "object",
                "required": ["StudyInstanceUID"],
                "properties": {"StudyInstanceUID": _uid_param("", "")["schema"]},
            },
            "Job": {
                "type": "object",
                "required": ["job", "state", "remote", "StudyInstanceUID"],
                "properties": {
                    "job": text,
                    "state": {"enum": ["queued", "running", "done", "failed", "cancelled"]},
                    "remote": text,
                    "StudyInstanceUID": text,
                    "status": {**nullable_text, "description": "last DIMSE status, 0xHHHH"},
                    "remaining": nullable_count,
                    "completed": count,
                    "failed": count,
                    "warning": count,
                    "failed_uids": {"type": "array", "items": text},
                    "error": nullable_text,
                    "created": {"type": "string", "format": "date-time"},
                    "finished": {"type": ["string", "null"], "format": "date-time"},
                },
            },
        },
    }


def document(dicomweb_base: str, admin_base: str = "/api") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the whole HTTP side."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pypacs",
            "version": pypacs.__version__,
            "description": "DICOMweb (PS3.18) under "
            f"{dicomweb_base}, the admin API under {admin_base}, the web page at /.",
        },
        "paths": {
            "/": {
                "get": _op(
                    "The web page",
                    "page",
                    {"200": {"description": "HTML", "content": {"text/html": {}}}},
                )
            },
            **_admin(admin_base),
            **_session(admin_base),
            **_dicomweb(dicomweb_base),
            **_wado_uri(),
            **_viewer(admin_base),
        },
        "components": _components(),
    }


def routes(dicomweb_base: str, admin_base: str = "/api") -> list[BaseRoute]:
    spec = document(dicomweb_base, admin_base)

    async def openapi(_request: Request) -> JSONResponse:
        return JSONResponse(spec)

    return [Route(f"{admin_base}/openapi.json", openapi, methods=["GET"])]
