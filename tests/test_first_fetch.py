"""Fetching galaxy_data.zip: local copy first, URL download with resume, clear offline errors."""

from __future__ import annotations

import http.server
import threading
import zipfile

import pytest

from radiogen.errors import InputFileError
from radiogen.first.fetch import ZENODO_URL, download, fetch_first_zip


@pytest.fixture()
def small_zip(tmp_path):
    path = tmp_path / "src" / "galaxy_data.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("galaxy_data/readme.txt", "x" * 50_000)
        archive.writestr("galaxy_data/other.bin", bytes(range(256)) * 400)
    return path


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    truncate = False
    requests: list = []

    def do_GET(self):  # noqa: N802 (http.server API)
        range_header = self.headers.get("Range")
        type(self).requests.append(range_header)
        start = int(range_header.split("=")[1].rstrip("-")) if range_header else 0
        body = self.payload[start:]
        self.send_response(206 if range_header else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.truncate else body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(small_zip):
    handler = type("Handler", (_RangeHandler,), {"payload": small_zip.read_bytes(), "requests": []})
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_port}/galaxy_data.zip"
    httpd.shutdown()


def test_prefers_existing_local_path(small_zip, tmp_path):
    out = tmp_path / "raw" / "galaxy_data.zip"
    origin = fetch_first_zip(out, source="http://unreachable.invalid/x.zip", local_path=small_zip)
    assert origin == str(small_zip)
    assert out.read_bytes() == small_zip.read_bytes()


def test_source_may_be_a_local_path(small_zip, tmp_path):
    out = tmp_path / "raw.zip"
    assert fetch_first_zip(out, source=str(small_zip), local_path=tmp_path / "absent.zip") == str(small_zip)
    assert zipfile.is_zipfile(out)


def test_missing_local_source_says_what_to_set(tmp_path):
    with pytest.raises(InputFileError, match=r"set first.source to the Zenodo URL"):
        fetch_first_zip(tmp_path / "o.zip", source=str(tmp_path / "none.zip"), local_path="")


def test_offline_download_error_says_what_to_set(tmp_path):
    with pytest.raises(InputFileError, match=r"without internet access set first.source .*first.local_path"):
        fetch_first_zip(tmp_path / "o.zip", source="http://127.0.0.1:9/galaxy_data.zip",
                        local_path=tmp_path / "absent.zip", timeout_s=2, retries=1)
    assert not (tmp_path / "o.zip").exists()


def test_download_resumes_partial_file(server, small_zip, tmp_path):
    handler, url = server
    out = tmp_path / "dl" / "galaxy_data.zip"
    out.parent.mkdir()
    data = small_zip.read_bytes()
    (out.parent / "galaxy_data.zip.part").write_bytes(data[:1000])
    download(url, out, timeout_s=5, retries=1)
    assert out.read_bytes() == data
    assert handler.requests == ["bytes=1000-"]
    assert not (out.parent / "galaxy_data.zip.part").exists()


def test_truncated_download_fails_size_check(server, tmp_path):
    handler, url = server
    handler.truncate = True
    with pytest.raises(InputFileError, match=r"download failed"):
        download(url, tmp_path / "o.zip", timeout_s=5, retries=1)
    assert not (tmp_path / "o.zip").exists()


def test_default_source_is_zenodo():
    assert ZENODO_URL == "https://zenodo.org/records/7689127/files/galaxy_data.zip"
