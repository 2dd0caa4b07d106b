"""Downloads against a real HTTP server on 127.0.0.1: resume, checks, offline errors."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from radiogen.cli import main as cli_main
from radiogen import download as dl
from radiogen.download import DownloadError, download_file

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, position-dependent bytes


class _Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at /mosaic.fits with Range support; behaviour set per server."""

    def do_GET(self):  # noqa: N802 (http.server API)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if self.path != "/mosaic.fits":
            self.send_error(404, "Not Found")
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and server.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.drop_after and len(server.requests) == 1:
            # First response: promise everything, send part, hang up.
            self.wfile.write(body[: server.drop_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    httpd.honour_range = True
    httpd.drop_after = 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _url(httpd, path="/mosaic.fits"):
    return f"http://127.0.0.1:{httpd.server_address[1]}{path}"


def test_full_download_with_checks(server, tmp_path):
    dest = tmp_path / "raw" / "P000+23.fits"
    download_file(_url(server), dest, size=len(PAYLOAD), sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                  md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "raw" / "P000+23.fits.part").exists()
    assert server.requests == [("/mosaic.fits", None)]


def test_resume_from_partial_file(server, tmp_path):
    dest = tmp_path / "m.fits"
    (tmp_path / "m.fits.part").write_bytes(PAYLOAD[:300_000])
    download_file(_url(server), dest, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/mosaic.fits", "bytes=300000-")]


def test_already_complete_part_file(server, tmp_path):
    dest = tmp_path / "m.fits"
    (tmp_path / "m.fits.part").write_bytes(PAYLOAD)
    download_file(_url(server), dest, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_server_without_range_restarts(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "m.fits"
    (tmp_path / "m.fits.part").write_bytes(b"stale bytes")
    download_file(_url(server), dest, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_dropped_connection_is_resumed(server, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "_BACKOFF_S", 0.0)
    server.drop_after = 200_000
    dest = tmp_path / "m.fits"
    download_file(_url(server), dest, retries=2, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[0][1] is None
    assert server.requests[1][1] is not None and server.requests[1][1].startswith("bytes=")
    assert int(server.requests[1][1].split("=")[1].rstrip("-")) > 0


def test_checksum_mismatch_deletes_part_and_names_url(server, tmp_path):
    dest = tmp_path / "m.fits"
    with pytest.raises(DownloadError, match=r"mosaic\.fits: sha256 mismatch for .*m\.fits"):
        download_file(_url(server), dest, sha256="0" * 64)
    assert not dest.exists() and not (tmp_path / "m.fits.part").exists()


def test_size_mismatch(server, tmp_path):
    with pytest.raises(DownloadError, match="size mismatch.*expected 5"):
        download_file(_url(server), tmp_path / "m.fits", size=5)
    assert not (tmp_path / "m.fits").exists()


def test_http_error_names_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/missing\.fits: HTTP 404"):
        download_file(_url(server, "/missing.fits"), tmp_path / "m.fits", hint="Set lotss.download.mosaic_url.")
    assert not (tmp_path / "m.fits").exists()


def test_offline_error_names_url_and_what_to_set(tmp_path):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/P000+23/mosaic-blanked.fits"
    hint = "Set lotss.download.mosaic_url to a reachable mirror."
    with pytest.raises(DownloadError) as err:
        download_file(url, tmp_path / "m.fits", retries=0, timeout_s=2, hint=hint)
    message = str(err.value)
    assert url in message and "offline or the server is unreachable" in message and hint in message
    assert not (tmp_path / "m.fits").exists()
    rc = cli_main(["lotss", "download", "--url", url, "--out", str(tmp_path / "m.fits"), "--retries", "0",
                   "--timeout-s", "2", "--hint", hint])
    assert rc == 1


def test_cli_download(server, tmp_path):
    dest = tmp_path / "cat.fits"
    rc = cli_main(["lotss", "download", "--url", _url(server), "--out", str(dest),
                   "--size", str(len(PAYLOAD)), "--sha256", hashlib.sha256(PAYLOAD).hexdigest()])
    assert rc == 0 and dest.read_bytes() == PAYLOAD


def _snakemake(repo_root, tmp_path, overlay: str, *args):
    import os
    import subprocess
    import sys

    (tmp_path / "overlay.yaml").write_text(overlay)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--nolock", "--configfile", "config.yaml",
         str(tmp_path / "overlay.yaml"), *args],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_workflow_downloads_and_cuts_real_data(repo_root, lotss_dr1_dir, tmp_path):
    """source: download end to end through Snakemake, served from 127.0.0.1."""
    import functools
    from http.server import SimpleHTTPRequestHandler

    from radiogen.lotss.cutouts import read_cutouts

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(lotss_dr1_dir))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    results = tmp_path / "results"
    overlay = f"""
results: {results}
lotss:
  source: download
  sources: all             # every catalogue source on the pieces (the resolved sample: test_lotss_cutouts)
  download:
    mosaics: [P205+55_400px, P218+55_200px]
    mosaic_url: "{base}/{{mosaic}}.fits"
    catalogue_url: "{base}/LoTSS_DR1_srl_P205+55_P218+55.fits"
    checksums:
      P218+55_200px: {{size: {(lotss_dr1_dir / "P218+55_200px.fits").stat().st_size}}}
"""
    try:
        run = _snakemake(repo_root, tmp_path, overlay, "--cores", "2", str(results / "lotss/main/cutouts.h5"))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert run.returncode == 0, run.stderr[-3000:]
    assert (results / "lotss/main/raw/catalogue.fits").stat().st_size == (lotss_dr1_dir / CATALOGUE_NAME).stat().st_size
    cutouts = read_cutouts(results / "lotss/main/cutouts.h5")
    assert cutouts["images"].shape == (34, 80, 80)
    assert set(cutouts["mosaic_id"]) == {"P205+55_400px", "P218+55_200px"}
    assert cutouts["attrs"]["n_catalogue"] == 12093


CATALOGUE_NAME = "LoTSS_DR1_srl_P205+55_P218+55.fits"


def test_workflow_files_source_dry_run(repo_root, lotss_dr1_dir, tmp_path):
    overlay = f"""
results: {tmp_path / "results"}
lotss:
  source: files
  files:
    catalogue: {lotss_dr1_dir / CATALOGUE_NAME}
    mosaics:
      P205+55: {lotss_dr1_dir / "P205+55_400px.fits"}
      P218+55: {lotss_dr1_dir / "P218+55_200px.fits"}
"""
    run = _snakemake(repo_root, tmp_path, overlay, "-n", str(tmp_path / "results/lotss/main/cutouts.h5"),
                     str(tmp_path / "results/lotss/classical/cutouts.h5"))
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout + run.stderr
    # main reads the configured files; only the classical survey is simulated.
    assert "simulate_survey" in out and "survey=classical" in out and "survey=main" in out
    assert "download_lotss" not in out
    assert str(lotss_dr1_dir / "P205+55_400px.fits") in out
    simulated = yaml.safe_load((repo_root / "config.yaml").read_text())["lotss"]["simulate"]["n_mosaics"]
    assert out.count("rule cutouts:") == 2 + simulated  # 2 real + the classical survey's mosaics

    missing = _snakemake(repo_root, tmp_path, "lotss:\n  source: files\n", "-n",
                         "results/lotss/main/cutouts.h5")
    assert missing.returncode != 0
    assert "lotss.files.mosaics" in missing.stdout + missing.stderr
