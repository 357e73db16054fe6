"""Jobs and remotes as the admin API writes them: the JSON shapes that web/openapi.py
describes. The jobs themselves, and the peers, are ``remote``'s."""

from __future__ import annotations

from typing import Any

from pypacs.remote.export import EchoResult
from pypacs.remote.jobs import Job
from pypacs.remote.registry import Peer


def _hex(status: int | None) -> str | None:
    return None if status is None else f"0x{status:04X}"


def job_json(job: Job) -> dict[str, Any]:
    """A job's state, as ``GET /api/jobs/{job}`` answers it."""
    return {
        "job": job.id,
        "state": job.state.value,
        "remote": job.peer,
        "StudyInstanceUID": job.study_uid,
        "status": _hex(job.status),
        "remaining": job.remaining,
        "completed": job.completed,
        "failed": job.failed,
        "warning": job.warning,
        "failed_uids": list(job.failed_uids),
        "error": job.error,
        "created": job.created,
        "finished": job.finished,
    }


def peer_json(peer: Peer) -> dict[str, Any]:
    """A configured remote, as ``GET /api/remotes`` lists it."""
    return {"name": peer.name, "ae_title": peer.ae_title, "host": peer.host, "port": peer.port}


def echo_json(peer: Peer, result: EchoResult) -> dict[str, Any]:
    """The outcome of ``POST /api/remotes/{name}/echo``."""
    return {
        "remote": peer.name,
        "ok": result.ok,
        "status": _hex(result.status),
        "milliseconds": result.milliseconds,
        "error": result.error,
    }
