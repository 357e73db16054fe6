"""Absolute URLs (RetrieveURL, BulkDataURI, the STOW-RS answer's URLs) name the address the
client can reach: the port pypacs listens on when the Host header has none, ``[web] base_url``
when it is set, and a reverse proxy's X-Forwarded-* headers only when the TCP peer is one of
``[web] trusted_proxies``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from pypacs.config import SETTINGS, load, parse_flag
from pypacs.errors import ConfigError

from dicomgen import Spec, make_dataset, write_dataset
from helpers import store_files
from serving import RunningServer, start_pypacs

SPEC = Spec("URL-1", "Address^Ann", 1, 1, 1, rows=16)
DATASET = make_dataset(SPEC)
STUDY, SERIES, SOP = (
    str(DATASET.StudyInstanceUID),
    str(DATASET.SeriesInstanceUID),
    str(DATASET.SOPInstanceUID),
)
RETRIEVE_URL, PIXEL_DATA = "00081190", "7FE00010"
INSTANCE_PATH = f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
PROXY_HEADERS = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "pacs.example.org",
    "X-Forwarded-Prefix": "/imaging",
}
PUBLIC = "https://pacs.example.org/imaging/dicom-web"


def serve(folder: Path, *flags: str) -> RunningServer:
    """A pypacs started with ``flags``, holding DATASET (stored over DIMSE)."""
    folder.mkdir()
    srv = start_pypacs(folder / "data", *flags)
    try:
        statuses = store_files(srv.dicom_port, [write_dataset(DATASET, folder)])
        assert [int(s.Status) for s in statuses.values()] == [0]
    except BaseException:
        srv.kill()
        raise
    return srv


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RunningServer]]:
    """Servers by their flags, each started once for the module."""
    started: dict[tuple[str, ...], RunningServer] = {}

    def get(*flags: str) -> RunningServer:
        if flags not in started:
            started[flags] = serve(tmp_path_factory.mktemp("urls") / "srv", *flags)
        return started[flags]

    yield get
    for srv in started.values():
        srv.kill()


def direct(srv: RunningServer) -> str:
    return f"http://127.0.0.1:{srv.http_port}/dicom-web"


def retrieve_url(srv: RunningServer, headers: dict[str, str], *, source: str = "127.0.0.1") -> str:
    """The RetrieveURL QIDO-RS answers for the study, asked from ``source`` with ``headers``."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        response = client.get(f"{direct(srv)}/studies", headers=headers)
    assert response.status_code == 200, response.text
    (study,) = response.json()
    url: str = study[RETRIEVE_URL]["Value"][0]
    return url


# -- the Host header without a port ---------------------------------------------------------


def test_dicomweb_client_follows_bulk_data_uri_when_host_has_no_port(
    servers: Callable[..., RunningServer],
) -> None:
    srv = servers()
    session = requests.Session()
    sent_hosts: list[str] = []
    session.hooks["response"].append(
        lambda r, *args, **kwargs: sent_hosts.append(r.request.headers["Host"])
    )
    client = DICOMwebClient(direct(srv), session=session)
    metadata = client.retrieve_instance_metadata(STUDY, SERIES, SOP)
    uri = metadata[PIXEL_DATA]["BulkDataURI"]
    assert uri == f"{direct(srv)}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/bulkdata/7FE00010"
    (pixels,) = client.retrieve_bulkdata(uri)
    assert pixels == DATASET.PixelData
    # What makes the case: the client names the host without the port.
    assert sent_hosts == ["127.0.0.1", "127.0.0.1"]


def test_raw_host_without_port_gets_the_listening_port(
    servers: Callable[..., RunningServer],
) -> None:
    srv = servers()
    response = httpx.get(
        f"{direct(srv)}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/metadata",
        headers={"Host": "127.0.0.1"},
    )
    assert response.status_code == 200
    assert response.request.headers["host"] == "127.0.0.1"
    uri = response.json()[0][PIXEL_DATA]["BulkDataURI"]
    assert uri == f"http://127.0.0.1:{srv.http_port}{INSTANCE_PATH}/bulkdata/7FE00010"
    # A Host naming its port is kept as it is (another name, another port).
    assert retrieve_url(srv, {"Host": "archive.local:9999"}) == (
        f"http://archive.local:9999/dicom-web/studies/{STUDY}"
    )
    # A Host that is no host falls back to the address the server listens on.
    assert retrieve_url(srv, {"Host": "a b/c"}) == f"{direct(srv)}/studies/{STUDY}"


# -- [web] base_url -------------------------------------------------------------------------


def test_base_url_overrides_host_and_forwarded_headers(
    servers: Callable[..., RunningServer],
) -> None:
    srv = servers("--base-url", "https://pacs.example.org/pacs/", "--trusted-proxies", "127.0.0.1")
    base = "https://pacs.example.org/pacs/dicom-web"
    assert retrieve_url(srv, {}) == f"{base}/studies/{STUDY}"
    assert retrieve_url(srv, {"Host": "other:1", **PROXY_HEADERS}) == f"{base}/studies/{STUDY}"
    metadata = httpx.get(f"{direct(srv)}/studies/{STUDY}/metadata").json()
    assert metadata[0][PIXEL_DATA]["BulkDataURI"] == (
        f"{base}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/bulkdata/7FE00010"
    )
    # STOW-RS answers with the same base (PS3.18 10.5.3, Table I.1-1: RetrieveURL).
    body = _stow_body(DATASET)
    answer = httpx.post(
        f"{direct(srv)}/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
    )
    assert answer.status_code in (200, 202), answer.text
    assert answer.json()[RETRIEVE_URL]["Value"] == [f"{base}/studies/{STUDY}"]


def _stow_body(ds: Dataset) -> bytes:
    from io import BytesIO

    encoded = BytesIO()
    ds.save_as(encoded, enforce_file_format=True)
    return b"--b\r\nContent-Type: application/dicom\r\n\r\n" + encoded.getvalue() + b"\r\n--b--\r\n"


# -- X-Forwarded-* --------------------------------------------------------------------------


def test_forwarded_headers_from_a_trusted_proxy(servers: Callable[..., RunningServer]) -> None:
    srv = servers("--trusted-proxies", "127.0.0.1")
    assert retrieve_url(srv, PROXY_HEADERS) == f"{PUBLIC}/studies/{STUDY}"
    # A forwarded host keeps its port; without X-Forwarded-Host the Host header is the
    # proxy's public name, on the scheme's default port.
    assert retrieve_url(srv, {"X-Forwarded-Host": "pacs.example.org:8443"}) == (
        f"http://pacs.example.org:8443/dicom-web/studies/{STUDY}"
    )
    assert retrieve_url(srv, {"Host": "pacs.example.org", "X-Forwarded-Proto": "https"}) == (
        f"https://pacs.example.org/dicom-web/studies/{STUDY}"
    )
    # Lists (several proxies): the first value is the client's.
    assert retrieve_url(srv, {"X-Forwarded-Host": "a.example.org, b.internal"}) == (
        f"http://a.example.org/dicom-web/studies/{STUDY}"
    )
    # Values that are not a scheme, host or path are not used.
    wrong = {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "x/y", "X-Forwarded-Prefix": ".."}
    assert retrieve_url(srv, wrong) == f"{direct(srv)}/studies/{STUDY}"


def test_forwarded_headers_from_a_trusted_network(servers: Callable[..., RunningServer]) -> None:
    srv = servers("--trusted-proxies", "10.0.0.0/8,127.0.0.0/30")
    assert retrieve_url(srv, PROXY_HEADERS, source="127.0.0.2") == f"{PUBLIC}/studies/{STUDY}"


@pytest.mark.parametrize("source", ["127.0.0.2", "127.0.0.1"])
def test_forwarded_headers_from_others_are_ignored(
    servers: Callable[..., RunningServer], source: str
) -> None:
    srv = servers("--trusted-proxies", "127.0.0.3,10.0.0.0/8")
    assert retrieve_url(srv, PROXY_HEADERS, source=source) == f"{direct(srv)}/studies/{STUDY}"


def test_a_proxy_that_sends_x_forwarded_for_is_still_trusted(
    servers: Callable[..., RunningServer],
) -> None:
    # Every reverse proxy also says whom it forwards for; the peer that is trusted is still
    # the proxy, not that client.
    srv = servers("--trusted-proxies", "127.0.0.1")
    headers = {**PROXY_HEADERS, "X-Forwarded-For": "203.0.113.5"}
    assert retrieve_url(srv, headers) == f"{PUBLIC}/studies/{STUDY}"


# -- the settings ---------------------------------------------------------------------------


def test_settings_reach_the_web_options(tmp_path: Path) -> None:
    path = tmp_path / "pypacs.toml"
    path.write_text(
        '[web]\nbase_url = "https://pacs.example.org/pacs"\n'
        'trusted_proxies = ["10.1.2.3", "fd00::/8"]\n'
    )
    options = load(path).web_options()
    assert options.base_url == "https://pacs.example.org/pacs"
    assert options.trusted_proxies == ("10.1.2.3", "fd00::/8")
    defaults = load(None).web_options()
    assert (defaults.base_url, defaults.trusted_proxies) == ("", ())
    flag = next(s for s in SETTINGS if s.key == "trusted_proxies")
    assert parse_flag(flag, "127.0.0.1, 10.0.0.0/8") == ["127.0.0.1", "10.0.0.0/8"]
    with pytest.raises(ConfigError, match=r"--trusted-proxies 'proxy\.local'"):
        parse_flag(flag, "proxy.local")
    with pytest.raises(ConfigError, match=r"--base-url 'pacs\.example\.org'"):
        parse_flag(next(s for s in SETTINGS if s.key == "base_url"), "pacs.example.org")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[web]\nbase_url = "pacs.example.org"\n',
            '[web] base_url = "pacs.example.org": expected an absolute http:// or https:// URL',
        ),
        (
            '[web]\nbase_url = "ftp://pacs.example.org/"\n',
            '[web] base_url = "ftp://pacs.example.org/": expected an absolute http://',
        ),
        (
            '[web]\nbase_url = "https://pacs.example.org/pacs?x=1"\n',
            "expected an http(s) URL with a host and a path only (no query, no fragment)",
        ),
        ("[web]\nbase_url = 8080\n", "[web] base_url = 8080: expected a string"),
        (
            '[web]\ntrusted_proxies = "127.0.0.1"\n',
            '[web] trusted_proxies = "127.0.0.1": expected a list',
        ),
        (
            '[web]\ntrusted_proxies = ["127.0.0.1", "proxy.local"]\n',
            "[web] trusted_proxies = ['127.0.0.1', 'proxy.local']: expected a list of IP "
            "addresses or CIDR networks",
        ),
        (
            '[web]\ntrusted_proxies = ["10.0.0.1/8"]\n',
            "'10.0.0.1/8' is neither an IP address nor a network with its host bits zero",
        ),
        ("[web]\ntrusted_proxies = [1]\n", "[web] trusted_proxies = [1]: expected a list of IP"),
    ],
)
def test_wrong_values_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pypacs.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
