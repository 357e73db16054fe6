"""``pypacs viewer install|status`` against a fake npm registry (a local HTTP server serving a
small tarball whose sha512 the test knows), and a running pypacs serving the installed build
at /viewer/: index.html moved below the prefix, the generated app-config, the isolation
headers, /api/viewer, the routes of the app, and the log-in in front of it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from pypacs.web.page import ohif

from helpers import CLI_ENV, run_pypacs
from qrscp import free_port
from serving import RunningServer, start_pypacs

INDEX_HTML = (
    '<!doctype html><html><head><script>window.PUBLIC_URL="/"</script>'
    '<link rel="manifest" href="/manifest.json"><link rel="icon" href="/assets/favicon.ico">'
    '<script src="/app-config.js"></script><script defer src="/app.bundle.abc.js"></script>'
    '<link href="/app.bundle.css" rel="stylesheet"><a href="https://ohif.org/">ohif</a>'
    "</head><body><div id=root></div></body></html>"
)
BUNDLE = 'var x = 1;\n__webpack_require__.p = "/";\nvar y = 2;\n'
WORKER = '(() => { __webpack_require__.p = "/"; })();\n'
CSS = "@font-face{src:url(/a1.woff2)}body{background:url(//cdn.example/x.png)}"


def tarball(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of ``files`` (paths as in the npm tarball: package/...)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


BUILD = {
    "package/package.json": b'{"name": "@ohif/app"}',
    "package/README.md": b"not part of the build",
    "package/dist/index.html": INDEX_HTML.encode(),
    "package/dist/app.bundle.abc.js": BUNDLE.encode(),
    "package/dist/compute.bundle.def.js": WORKER.encode(),
    "package/dist/app.bundle.css": CSS.encode(),
    "package/dist/app-config.js": b"window.config = {dataSources: []};",
    "package/dist/a1.woff2": b"\0font",
    "package/dist/assets/favicon.ico": b"\0\0\1\0icon",
    "package/dist/manifest.json": b"{}",
}


@dataclass
class Registry:
    """A fake npm registry: path -> bytes; every path asked is recorded."""

    port: int
    files: dict[str, bytes] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, data: bytes, version: str = ohif.VERSION) -> ohif.Release:
        """Serve ``data`` where the pinned release's tarball is; that release with the
        digest of ``data``."""
        tarball_url = ohif.release(self.url).tarball
        self.files[tarball_url.removeprefix(self.url)] = data
        return ohif.Release(version, tarball_url, integrity(data))


@pytest.fixture
def registry() -> Iterator[Registry]:
    found = Registry(0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found.asked.append(self.path)
            data = found.files.get(self.path)
            if data is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# -- the install ----------------------------------------------------------------------------


def test_install_unpacks_the_build_and_adapts_it(registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "viewer"
    release = registry.serve(tarball(BUILD))
    found = ohif.install(root, release)
    folder = root / ohif.VERSION
    assert found.folder == folder
    assert found.version == ohif.VERSION
    assert found.integrity == release.integrity
    assert found.source == release.tarball
    assert registry.asked == [f"/@ohif/app/-/app-{ohif.VERSION}.tgz"]
    # Only dist/, unpacked at the folder's top; nothing else of the download is left.
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ohif.MARKER,
        "a1.woff2",
        "app-config.js",
        "app.bundle.abc.js",
        "app.bundle.css",
        "assets/favicon.ico",
        "compute.bundle.def.js",
        "index.html",
        "manifest.json",
    ]
    assert leftovers(root) == [ohif.VERSION]
    # The webpack runtimes load their chunks from PUBLIC_URL, not from the site's root.
    bundle = (folder / "app.bundle.abc.js").read_text()
    assert '__webpack_require__.p = "/"' not in bundle
    assert "window.PUBLIC_URL" in bundle
    assert bundle.startswith("var x = 1;\n") and bundle.endswith("var y = 2;\n")
    assert "self.location.pathname" in (folder / "compute.bundle.def.js").read_text()
    # A stylesheet's root URL becomes relative to it; a scheme-relative one is left alone.
    assert (folder / "app.bundle.css").read_text() == (
        "@font-face{src:url(a1.woff2)}body{background:url(//cdn.example/x.png)}"
    )
    assert (folder / "index.html").read_text() == INDEX_HTML
    marker = json.loads((folder / ohif.MARKER).read_text())
    assert marker["version"] == ohif.VERSION
    assert marker["integrity"] == release.integrity
    assert ohif.installed(root) == found


def test_an_installed_viewer_is_kept_unless_forced(registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "viewer"
    ohif.install(root, registry.serve(tarball(BUILD)))
    changed = {**BUILD, "package/dist/manifest.json": b'{"second": true}'}
    second = registry.serve(tarball(changed))
    ohif.install(root, second)
    assert (root / ohif.VERSION / "manifest.json").read_bytes() == b"{}"
    assert len(registry.asked) == 1
    ohif.install(root, second, force=True)
    assert (root / ohif.VERSION / "manifest.json").read_bytes() == b'{"second": true}'
    assert leftovers(root) == [ohif.VERSION]


def test_a_wrong_digest_is_refused_and_nothing_is_left(registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "viewer"
    release = registry.serve(tarball(BUILD))
    wrong = ohif.Release(release.version, release.tarball, integrity(b"another package"))
    with pytest.raises(ohif.ViewerError, match="not the pinned sha512-") as caught:
        ohif.install(root, wrong)
    assert "nothing was installed" in str(caught.value)
    assert leftovers(root) == []
    assert ohif.installed(root) is None


def test_a_tarball_without_a_build_is_refused(registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "viewer"
    release = registry.serve(tarball({"package/package.json": b"{}"}))
    with pytest.raises(ohif.ViewerError, match=r"no viewer build \(no dist/index.html\)"):
        ohif.install(root, release)
    assert leftovers(root) == []
    not_tar = registry.serve(b"this is no tarball")
    with pytest.raises(ohif.ViewerError, match="not a readable tarball"):
        ohif.install(root, not_tar)
    assert leftovers(root) == []


def test_a_build_of_another_shape_is_refused(registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "viewer"
    other = {**BUILD, "package/dist/app.bundle.abc.js": b"var p = '/';"}
    del other["package/dist/compute.bundle.def.js"]
    with pytest.raises(ohif.ViewerError, match="do not set their public path as expected"):
        ohif.install(root, registry.serve(tarball(other)))
    assert leftovers(root) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB filesystem of its own (tmpfs, mounted as root, as tests/archive does)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_is_said_and_nothing_is_left(registry: Registry, small_disk: Path) -> None:
    root = small_disk / "viewer"
    # Compresses to a few kB; 4 MiB unpacked, more than the disk holds.
    big = {**BUILD, "package/dist/big.wasm": bytes(4 * 1024 * 1024)}
    with pytest.raises(ohif.ViewerError, match=r"no space left to install the viewer in") as caught:
        ohif.install(root, registry.serve(tarball(big)))
    assert "it needs about" in str(caught.value)
    assert leftovers(root) == []


# -- the command line -----------------------------------------------------------------------


def viewer_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pypacs("viewer", *args, "--data", str(tmp_path / "data"), cwd=tmp_path)


def test_cli_refuses_a_tarball_other_than_the_pinned_one(
    registry: Registry, tmp_path: Path
) -> None:
    registry.serve(tarball(BUILD))  # not the real @ohif/app: its digest is not the pinned one
    done = viewer_cli(tmp_path, "install", "--registry", registry.url)
    assert done.returncode == 1, done.stderr
    assert f"not the pinned {ohif.INTEGRITY}" in done.stderr
    assert leftovers(tmp_path / "data" / "viewer") == []
    status = viewer_cli(tmp_path, "status")
    assert status.returncode == 1
    assert f"the OHIF viewer {ohif.VERSION} is not installed" in status.stdout


def test_cli_says_when_the_registry_cannot_be_reached(tmp_path: Path) -> None:
    done = viewer_cli(tmp_path, "install", "--registry", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "cannot reach the registry" in done.stderr
    assert "Connection refused" in done.stderr


def test_cli_says_what_the_registry_answered(registry: Registry, tmp_path: Path) -> None:
    done = viewer_cli(tmp_path, "install", "--registry", registry.url + "/mirror")
    assert done.returncode == 1
    assert "the registry answered 404 Not Found for " in done.stderr
    assert registry.asked == [f"/mirror/@ohif/app/-/app-{ohif.VERSION}.tgz"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--registry", "ftp://example.org"), "expected an http:// or https:// URL"),
        (("--registry", "registry.npmjs.org"), "expected an http:// or https:// URL"),
        (("--timeout", "soon"), "'soon' is not a number of seconds from 1 to 3600"),
        (("--timeout", "0"), "'0' is not a number of seconds from 1 to 3600"),
        (("--unknown",), "unrecognized arguments: --unknown"),
    ],
)
def test_cli_refuses_wrong_arguments(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = viewer_cli(tmp_path, "install", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "data").exists()


def test_cli_status_of_an_installed_viewer(registry: Registry, tmp_path: Path) -> None:
    release = registry.serve(tarball(BUILD))
    ohif.install(tmp_path / "data" / "viewer", release)
    done = viewer_cli(tmp_path, "status")
    assert done.returncode == 0, done.stderr
    assert f"installed: @ohif/app {ohif.VERSION}" in done.stdout
    assert f"integrity: {release.integrity}" in done.stdout
    again = viewer_cli(tmp_path, "install", "--registry", registry.url)
    assert again.returncode == 0, again.stderr
    assert "is installed in" in again.stdout
    assert len(registry.asked) == 1  # nothing fetched again


# -- served by pypacs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake build installed as the pinned version (a fake registry of this module's own)."""
    root = tmp_path_factory.mktemp("fake-viewer") / "viewer"
    data = tarball(BUILD)
    folder = root.parent / "registry"
    folder.mkdir()
    (folder / "app.tgz").write_bytes(data)
    ohif.install(root, ohif.Release(ohif.VERSION, (folder / "app.tgz").as_uri(), integrity(data)))
    return root


def serve_with_viewer(data: Path, root: Path, *flags: str) -> RunningServer:
    data.mkdir(parents=True)
    (data / "viewer").symlink_to(root)
    return start_pypacs(data, *flags)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, installed_root: Path) -> Iterator[str]:
    srv = serve_with_viewer(tmp_path_factory.mktemp("viewer-served") / "data", installed_root)
    try:
        yield f"http://127.0.0.1:{srv.http_port}"
    finally:
        srv.kill()


def test_index_is_moved_below_the_prefix(pacs: str) -> None:
    for path in ("/viewer/", "/viewer/index.html", "/viewer/viewer", "/viewer/local/x"):
        response = httpx.get(pacs + path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.text == INDEX_HTML.replace('"/', '"/viewer/')
        assert re.findall(r'(?:href|src)="([^"]+)"', response.text) == [
            "/viewer/manifest.json",
            "/viewer/assets/favicon.ico",
            "/viewer/app-config.js",
            "/viewer/app.bundle.abc.js",
            "/viewer/app.bundle.css",
            "https://ohif.org/",
        ]
        assert_isolated(response)
    moved = httpx.get(pacs + "/viewer")
    assert moved.status_code in (307, 308)
    assert moved.headers["location"].endswith("/viewer/")


def assert_isolated(response: httpx.Response) -> None:
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["cross-origin-embedder-policy"] == "require-corp"
    assert response.headers["cross-origin-resource-policy"] == "same-origin"


def test_files_are_served_as_installed(pacs: str, installed_root: Path) -> None:
    folder = installed_root / ohif.VERSION
    for name in ("app.bundle.abc.js", "app.bundle.css", "a1.woff2", "assets/favicon.ico"):
        response = httpx.get(f"{pacs}/viewer/{name}")
        assert response.status_code == 200, name
        assert response.content == (folder / name).read_bytes()
        assert_isolated(response)
    assert httpx.get(f"{pacs}/viewer/app.bundle.abc.js").headers["content-type"] in (
        "text/javascript; charset=utf-8",
        "application/javascript",
    )


def test_app_config_names_pypacs_dicomweb(pacs: str) -> None:
    response = httpx.get(f"{pacs}/viewer/app-config.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert_isolated(response)
    text = response.text
    assert text.startswith("window.config = ") and text.endswith(";\n")
    config = json.loads(text.removeprefix("window.config = ").removesuffix(";\n"))
    assert config["routerBasename"] == "/viewer"
    assert config["defaultDataSourceName"] == "pypacs"
    (source,) = config["dataSources"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert source["sourceName"] == "pypacs"
    settings = source["configuration"]
    assert settings["qidoRoot"] == f"{pacs}/dicom-web"
    assert settings["wadoRoot"] == f"{pacs}/dicom-web"
    assert settings["wadoUriRoot"] == f"{pacs}/wado"
    expected = {
        "supportsFuzzyMatching": False,
        "supportsWildcard": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": True,
        "omitQuotationForMultipartRequest": True,
    }
    assert {key: settings[key] for key in expected} == expected
    assert settings["bulkDataURI"]["enabled"] is True


def test_api_viewer_tells_the_page_how_to_open_a_study(pacs: str) -> None:
    response = httpx.get(f"{pacs}/api/viewer")
    assert response.status_code == 200
    assert response.json() == {
        "installed": True,
        "version": ohif.VERSION,
        "url": "/viewer/",
        "study_url": "/viewer/viewer?StudyInstanceUIDs={study}",
        "series_url": "/viewer/viewer?StudyInstanceUIDs={study}&initialSeriesInstanceUID={series}",
    }


def test_what_is_no_file_of_the_viewer(pacs: str) -> None:
    for path in ("/viewer/missing.js", "/viewer/assets/none.png", f"/viewer/{ohif.MARKER}"):
        response = httpx.get(pacs + path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not-found"
        assert path in response.json()["error"]["message"]
    escape = httpx.get(pacs + "/viewer/%2e%2e/%2e%2e/registry/app.tgz")
    assert escape.status_code == 404
    posted = httpx.post(f"{pacs}/viewer/index.html", headers={"Origin": pacs})
    assert posted.status_code == 405
    assert posted.json()["error"]["message"] == (
        "POST /viewer/index.html: the viewer's files answer GET and HEAD"
    )


def test_without_a_viewer(tmp_path: Path) -> None:
    srv = start_pypacs(tmp_path / "data")
    try:
        base = f"http://127.0.0.1:{srv.http_port}"
        for path in ("/api/viewer", "/viewer/", "/viewer/viewer"):
            response = httpx.get(base + path)
            assert response.status_code == 404, path
            assert response.json()["error"] == {
                "status": 404,
                "code": "viewer-not-installed",
                "message": f"the OHIF viewer {ohif.VERSION} is not installed: run pypacs "
                "viewer install",
            }
    finally:
        srv.kill()


def test_behind_a_base_url_with_a_path(tmp_path: Path, installed_root: Path) -> None:
    public = "https://pacs.example.org/pacs"
    srv = serve_with_viewer(tmp_path / "data", installed_root, "--base-url", public)
    try:
        base = f"http://127.0.0.1:{srv.http_port}"
        index = httpx.get(base + "/viewer/viewer").text
        assert 'window.PUBLIC_URL="/pacs/viewer/"' in index
        assert 'src="/pacs/viewer/app-config.js"' in index
        config = httpx.get(base + "/viewer/app-config.js").text
        assert f'"qidoRoot": "{public}/dicom-web"' in config
        assert '"routerBasename": "/pacs/viewer"' in config
        about = httpx.get(base + "/api/viewer").json()
        assert about["study_url"] == "/pacs/viewer/viewer?StudyInstanceUIDs={study}"
    finally:
        srv.kill()


def test_the_log_in_guards_the_viewer(tmp_path: Path, installed_root: Path) -> None:
    config = tmp_path / "pypacs.toml"
    data = tmp_path / "data"
    config.write_text(f'[auth]\nmode = "local"\n[storage]\npath = "{data}"\n')
    srv = serve_with_viewer(data, installed_root, "--config", str(config))
    try:
        added = subprocess.run(
            [sys.executable, "-m", "pypacs", "user", "add", "vera", "--role", "reader",
             "--password-stdin", "--config", str(config)],
            input="vera-password\n", capture_output=True, text=True, timeout=120, env=CLI_ENV,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        base = f"http://127.0.0.1:{srv.http_port}"
        # A browser without a session is sent to log in; a script gets 401.
        page = httpx.get(base + "/viewer/viewer", headers={"Accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"] == f"{base}/login"
        assert httpx.get(base + "/viewer/app.bundle.abc.js").status_code == 401
        assert httpx.get(base + "/api/viewer").status_code == 401
        with httpx.Client(base_url=base) as client:
            login = client.post(
                "/api/session",
                json={"name": "vera", "password": "vera-password"},
                headers={"Origin": base},
            )
            assert login.status_code == 200, login.text
            assert client.get("/viewer/viewer", headers={"Accept": "text/html"}).status_code == 200
            script = client.get("/viewer/app.bundle.abc.js")
            assert script.status_code == 200
            assert_isolated(script)
            assert client.get("/api/viewer").json()["installed"] is True
            assert client.get("/dicom-web/studies").status_code in (200, 204)
    finally:
        srv.kill()
