"""DELETE of a study, a series or an instance (an administrative extension: PS3.18 defines
no delete transaction; the resource URLs are those of PS3.18 10.4.1.1).

Success is 204 No Content. The archive removes the index rows first, with every derived
count, then the files (index/deletes.py says why, and what a crash in between leaves).
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pypacs.archive import Archive
from pypacs.web.dicomweb.resources import entity_of
from pypacs.web.options import WebOptions

log = logging.getLogger("pypacs.web.dicomweb.delete")


def routes(archive: Archive, options: WebOptions, base: str) -> list[BaseRoute]:
    """DELETE {base}/studies/{study}[/series/{series}[/instances/{instance}]]."""

    async def delete(request: Request) -> Response:
        removed = await run_in_threadpool(archive.delete, entity_of(request))
        log.info(
            "DELETE from %s: %s: %d patients, %d studies, %d series, %d instances removed",
            request.client.host if request.client else "?",
            request.url.path,
            removed.patients,
            removed.studies,
            removed.series,
            removed.instances,
        )
        return Response(status_code=204)

    study = f"{base}/studies/{{study}}"
    series = f"{study}/series/{{series}}"
    return [
        Route(study, delete, methods=["DELETE"]),
        Route(series, delete, methods=["DELETE"]),
        Route(f"{series}/instances/{{instance}}", delete, methods=["DELETE"]),
    ]
