"""The web page: static files in the package (no build step), served for what no route takes."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

# pydicom keeps its dictionaries here; datadict uses them without re-exporting them.
from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"


# The tag view's names: the data dictionary of PS3.6 (as pydicom holds it), served beside the
# page's files rather than kept as a copy of it among them.
DICTIONARY = "dictionary.json"


@cache
def dictionary_json() -> bytes:
    """{"GGGGEEEE": [keyword, name]} for every tag of the dictionary, repeating groups
    ("60xx0010") by their pattern."""
    entries = {f"{tag:08X}": [e[4], e[2]] for tag, e in DicomDictionary.items()}
    entries.update(
        {tag.upper().replace("X", "x"): [e[4], e[2]] for tag, e in RepeatersDictionary.items()}
    )
    return json.dumps(entries, separators=(",", ":"), sort_keys=True).encode()


def files() -> StaticFiles:
    """The page's files. As the router's default (not a route at "/"), a method a route does
    not allow still gets 405 there, not 404."""
    return _Page(directory=STATIC, html=True)


class _Page(StaticFiles):
    """The web page's files. Another method than GET or HEAD on a path that is no file is
    404, as on any unknown path (StaticFiles answers 405 before it looks)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path == DICTIONARY and scope["method"] in ("GET", "HEAD"):
            return Response(
                dictionary_json(),
                media_type="application/json",
                headers={"Cache-Control": "max-age=86400"},
            )
        if scope["method"] not in ("GET", "HEAD"):
            _, found = await run_in_threadpool(self.lookup_path, path)
            if found is None:
                raise HTTPException(status_code=404)
        return await super().get_response(path, scope)
