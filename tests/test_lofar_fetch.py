"""radiogen model fetch: the published model files, local copy first, resumable download, recorded checksum."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from radiogen.download import DownloadError
from radiogen.errors import ConfigError, InputFileError
from radiogen.model.lofar_fetch import PUBLISHED, RECORD_NAME, fetch_published

FILES = [name for name, _ in PUBLISHED["lofar-diffusion-first"]]


class _Handler(http.server.BaseHTTPRequestHandler):
    payloads: dict = {}
    truncate_once: set = set()
    requests: list = []

    def do_GET(self):  # noqa: N802 (http.server API)
        name = self.path.strip("/")
        range_header = self.headers.get("Range")
        type(self).requests.append((name, range_header))
        start = int(range_header.split("=")[1].rstrip("-")) if range_header else 0
        body = self.payloads[name][start:]
        self.send_response(206 if range_header else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.truncate_once:
            self.truncate_once.discard(name)
            self.wfile.write(body[: len(body) // 3])
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    payloads = {FILES[0]: bytes(range(256)) * 300, FILES[1]: b'{"init_channels": 128}'}
    handler = type("Handler", (_Handler,), {"payloads": payloads, "truncate_once": set(), "requests": []})
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_port}/"
    yield handler, {name: base + name for name in FILES}
    httpd.shutdown()


def test_download_resumes_and_records_size_and_checksum(server, tmp_path):
    handler, urls = server
    handler.truncate_once.add(FILES[0])
    placed = fetch_published("lofar-diffusion-first", tmp_path, urls=urls, retries=2)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == handler.payloads[name]
        assert placed[name] == str(tmp_path / name)
    ranges = [r for n, r in handler.requests if n == FILES[0]]
    assert ranges[0] is None and ranges[1] == f"bytes={len(handler.payloads[FILES[0]]) // 3}-"
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    assert record[FILES[0]]["size"] == 256 * 300 and len(record[FILES[0]]["sha256"]) == 64


def test_second_download_must_match_the_record(server, tmp_path):
    handler, urls = server
    fetch_published("lofar-diffusion-first", tmp_path, urls=urls)
    (tmp_path / FILES[0]).unlink()
    original = handler.payloads[FILES[0]]
    handler.payloads[FILES[0]] = bytes(256 * 300)  # same size, other content
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch_published("lofar-diffusion-first", tmp_path, urls=urls)
    assert not (tmp_path / FILES[0]).exists()
    handler.payloads[FILES[0]] = original
    (tmp_path / FILES[1]).write_bytes(b"{}")
    with pytest.raises(InputFileError, match="recorded"):
        fetch_published("lofar-diffusion-first", tmp_path, urls=urls)


def test_local_copy_wins_without_network(tmp_path):
    local = tmp_path / "have"
    local.mkdir()
    for name in FILES:
        (local / name).write_bytes(b"x")
    urls = {name: "http://unreachable.invalid/" + name for name in FILES}
    placed = fetch_published("lofar-diffusion-first", tmp_path / "out", local_dir=local, urls=urls)
    assert placed == {name: str(local / name) for name in FILES}


def test_offline_error_says_what_to_do(tmp_path):
    urls = {name: "http://127.0.0.1:9/" + name for name in FILES}
    with pytest.raises(InputFileError, match="--local-dir"):
        fetch_published("lofar-diffusion-first", tmp_path, urls=urls, retries=0, timeout_s=2)
    with pytest.raises(ConfigError, match="lofar-diffusion-lotss"):
        fetch_published("lofar-diffusion-other", tmp_path)


def test_links_are_the_authors_share_links():
    urls = dict(PUBLISHED["lofar-diffusion-lotss"])
    assert urls["parameters_LOFAR_model.pt"] == "https://cloud.hs.uni-hamburg.de/s/KTAFWFnLByMgNRn/download"
    assert urls["LOFAR_Dataset.h5"] == "https://cloud.hs.uni-hamburg.de/s/jPZdExPPmcZ48o5/download"
    assert dict(PUBLISHED["lofar-diffusion-first"])["parameters_FIRST_model.pt"].endswith("xs7bbt99AMFf8gP/download")
