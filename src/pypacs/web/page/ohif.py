"""The OHIF Viewer, installed by pypacs from its published build (``@ohif/app`` on the npm
registry), never copied into pypacs: ``pypacs viewer install`` puts it in
``<storage path>/viewer/<version>/``, where web/page/viewer.py serves it at ``/viewer/``.

The release is pinned: its version and the sha512 the registry publishes for its tarball
(``npm view @ohif/app@VERSION dist.integrity``). A download whose digest differs is refused
and nothing of it is kept. The tarball's ``package/dist/`` is unpacked into a staging folder
beside the installed ones, adapted to be served below a path prefix, marked as complete,
and renamed into place: a viewer folder is either whole or absent.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pypacs.errors import PypacsError

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
# Subresource Integrity form (W3C SRI 3.1): "sha512-" and the digest in base64.
INTEGRITY = (
    "sha512-"
    "WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
DEFAULT_REGISTRY = "https://registry.npmjs.org"
MARKER = ".pypacs-viewer.json"  # written last: a folder without it is no installed viewer
_NEEDED_BYTES = 260 * 1024 * 1024  # the unpacked build and its tarball, for the error message
_CHUNK = 1024 * 1024
_DIST = "package/dist/"
# The build's own webpack runtimes (the app's and each worker's) load their chunks from "/".
# They are made to load them from window.PUBLIC_URL (which index.html sets, and
# web/page/viewer.py sets to the viewer's prefix), or in a worker from the folder of the
# worker's own script.
_PUBLIC_PATH = '__webpack_require__.p = "/";'
_PUBLIC_PATH_RUNTIME = (
    "__webpack_require__.p = (typeof window === 'object' && window.PUBLIC_URL) || "
    "self.location.pathname.replace(/[^/]*$/, '');"
)
# A stylesheet's absolute url(/file) becomes relative to the stylesheet (CSS Values 4.5.1).
_CSS_ROOT_URL = re.compile(r"url\(/(?!/)")


class ViewerError(PypacsError):
    """The viewer could not be installed (no network, a wrong digest, a full disk, ...)."""


@dataclass(frozen=True)
class Release:
    """What to install: a version, where its tarball is, the digest it must have."""

    version: str
    tarball: str  # URL of the package tarball
    integrity: str  # "sha512-<base64>", as the registry's dist.integrity


@dataclass(frozen=True)
class Installed:
    """A viewer that is installed: its version, its folder and where it came from."""

    version: str
    folder: Path
    integrity: str
    source: str
    installed_at: str


def release(registry: str = DEFAULT_REGISTRY) -> Release:
    """The pinned release, its tarball at ``registry`` (npm's URL layout).

    Raises:
        ViewerError: ``registry`` is not an http(s) URL.
    """
    base = registry.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s/?#@]+(?:/[^\s?#]*)?", base):
        raise ViewerError(
            f"registry {registry!r}: expected an http:// or https:// URL such as {DEFAULT_REGISTRY}"
        )
    name = PACKAGE.split("/")[1]
    return Release(VERSION, f"{base}/{PACKAGE}/-/{name}-{VERSION}.tgz", INTEGRITY)


def installed(root: Path, version: str = VERSION) -> Installed | None:
    """The viewer of ``version`` under ``root`` when it is completely installed, else None."""
    folder = root / version
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("version") != version:
        return None
    if not (folder / "index.html").is_file():
        return None
    return Installed(
        version,
        folder,
        str(marker.get("integrity", "")),
        str(marker.get("source", "")),
        str(marker.get("installed_at", "")),
    )


def install(
    root: Path,
    rel: Release,
    *,
    force: bool = False,
    timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> Installed:
    """Download, check, unpack and adapt ``rel`` into ``root/<version>``; the installed
    viewer. One already installed is kept unless ``force``.

    Raises:
        ViewerError: the registry cannot be reached or answers an error, the tarball's digest
            is not ``rel.integrity``, it holds no viewer build, or the disk is full. Nothing
            of the attempt is left behind.
    """
    say = progress or (lambda _message: None)
    present = installed(root, rel.version)
    if present is not None and not force:
        return present
    algorithm, expected = _parse_integrity(rel.integrity)
    token = uuid.uuid4().hex[:12]
    download = root / f".download-{token}.tgz"
    staging = root / f".staging-{token}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        say(f"downloading {rel.tarball}")
        digest = _download(rel.tarball, download, algorithm, timeout)
        if digest != expected:
            raise ViewerError(
                f"the tarball from {rel.tarball} has {algorithm} "
                f"{base64.b64encode(digest).decode()}, not the pinned {rel.integrity}: refused "
                "(a corrupted download, or a registry serving another package); nothing was "
                "installed"
            )
        say(f"unpacking into {root / rel.version}")
        _unpack(download, staging)
        _adapt(staging)
        _write_marker(staging, rel)
        _move_into_place(staging, root / rel.version)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise ViewerError(
                f"no space left to install the viewer in {root} ({exc.strerror}): it needs "
                f"about {_NEEDED_BYTES // (1024 * 1024)} MB; nothing was installed"
            ) from exc
        raise ViewerError(
            f"cannot install the viewer in {root}: {exc.strerror or exc}; nothing was installed"
        ) from exc
    finally:
        download.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    found = installed(root, rel.version)
    if found is None:  # pragma: no cover - the marker was just written
        raise ViewerError(f"the viewer in {root / rel.version} is incomplete")
    return found


def _parse_integrity(integrity: str) -> tuple[str, bytes]:
    algorithm, dash, encoded = integrity.partition("-")
    if not dash or algorithm not in ("sha512", "sha384", "sha256"):
        raise ViewerError(f"integrity {integrity!r}: expected sha512-<base64>")
    try:
        return algorithm, base64.b64decode(encoded, validate=True)
    except ValueError:
        raise ViewerError(f"integrity {integrity!r}: the digest is not base64") from None


def _download(url: str, target: Path, algorithm: str, timeout: float) -> bytes:
    """Stream ``url`` into ``target``; the digest of what was written.

    Raises:
        ViewerError: the registry is unreachable, answers an error, or stops sending.
    """
    digest = hashlib.new(algorithm)
    request = urllib.request.Request(url, headers={"User-Agent": "pypacs viewer install"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, target.open("wb") as out:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        exc.close()  # the error holds the answer's connection open until closed
        raise ViewerError(f"the registry answered {exc.code} {exc.reason} for {url}") from exc
    except urllib.error.URLError as exc:
        raise ViewerError(
            f"cannot reach the registry for {url}: {exc.reason} (no network? "
            "pypacs viewer install --registry URL names a mirror)"
        ) from exc
    except (TimeoutError, ConnectionError) as exc:
        raise ViewerError(f"the download of {url} failed: {exc}") from exc
    return digest.digest()


def _unpack(tarball: Path, staging: Path) -> None:
    """The files under ``package/dist/`` of the npm tarball into ``staging``.

    Raises:
        ViewerError: not a gzipped tar, or no ``package/dist/index.html`` in it.
    """
    staging.mkdir()
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            members = []
            for member in archive:
                if not member.name.startswith(_DIST) or not (member.isfile() or member.isdir()):
                    continue
                member.name = member.name[len(_DIST) :]
                if member.name:
                    members.append(member)
            # The "data" filter refuses absolute paths, ".." and links out of the folder.
            archive.extractall(staging, members=members, filter="data")
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise ViewerError(f"the downloaded package is not a readable tarball: {exc}") from exc
    if not (staging / "index.html").is_file():
        raise ViewerError("the downloaded package holds no viewer build (no dist/index.html)")


def _adapt(folder: Path) -> None:
    """Let the build be served below a prefix instead of at the site's root."""
    patched = 0
    for script in folder.glob("*.js"):
        text = script.read_text(encoding="utf-8", errors="surrogateescape")
        if _PUBLIC_PATH in text:
            script.write_text(
                text.replace(_PUBLIC_PATH, _PUBLIC_PATH_RUNTIME),
                encoding="utf-8",
                errors="surrogateescape",
            )
            patched += 1
    if patched == 0:
        raise ViewerError(
            "the viewer build's scripts do not set their public path as expected: this "
            "pypacs cannot serve that build below /viewer/"
        )
    for sheet in folder.glob("*.css"):
        text = sheet.read_text(encoding="utf-8", errors="surrogateescape")
        sheet.write_text(
            _CSS_ROOT_URL.sub("url(", text), encoding="utf-8", errors="surrogateescape"
        )


def _write_marker(folder: Path, rel: Release) -> None:
    marker = {
        "package": PACKAGE,
        "version": rel.version,
        "integrity": rel.integrity,
        "source": rel.tarball,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; one there already goes once the new one is in."""
    old = folder.with_name(f".old-{uuid.uuid4().hex[:12]}")
    had_old = folder.exists()
    if had_old:
        folder.rename(old)
    try:
        staging.rename(folder)
    except OSError:
        if had_old:
            old.rename(folder)
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
