"""`pnp-ovss prepare --download` (pnp_ovss.prepare.fetch) against a local HTTP server on 127.0.0.1.

The server serves fabricated archives, answers Range requests, and misbehaves on request (cuts a transfer after
N bytes, ignores Range, answers 404/503/HTML); it logs every request so the tests can count and inspect them.
Nothing here touches the real internet: every Download is a copy of an official entry pointed at the server.
"""

import contextlib
import dataclasses
import hashlib
import io
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from support.fabricate_downloads import ade20k as fabricate_ade20k

from pnp_ovss.cli import main
from pnp_ovss.prepare import plans, sources
from pnp_ovss.prepare.fetch import fetch, fetch_for_dataset
from pnp_ovss.prepare.sources import PrepareError

NAME = "ADEChallengeData2016.zip"


class ArchiveServer:
    """Files by name on a random local port. ``actions`` is a FIFO of what to do for the next requests
    (``"ok"`` when empty): ``("cut", n)`` sends the headers of the whole answer and only ``n`` body bytes (``("stall", n)``: then
    waits without closing),
    ``("status", code)`` answers that status, ``"html"`` answers a login page. ``ignore_range``: always 200."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.actions: list = []
        self.requests: list[dict] = []
        self.ignore_range = False
        self.release = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with server.lock:
                    action = server.actions.pop(0) if server.actions else "ok"
                    record = {"path": self.path, "range": self.headers.get("Range"), "action": action, "sent": 0}
                    server.requests.append(record)
                server.respond(self, action, record)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def respond(self, h: BaseHTTPRequestHandler, action, record: dict) -> None:
        if isinstance(action, tuple) and action[0] == "status":
            h.send_response(action[1])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if action == "html":
            body = b"<html><body>Please log in</body></html>"
            h.send_response(200)
            h.send_header("Content-Type", "text/html; charset=utf-8")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        data = self.files.get(h.path.lstrip("/"))
        if data is None:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", record["range"] or "")
        if match and not self.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if isinstance(action, tuple) and action[0] in ("cut", "stall"):
            body = body[: action[1]]
        h.wfile.write(body)
        record["sent"] = len(body)
        if isinstance(action, tuple) and action[0] == "stall":
            self.release.wait(5)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ArchiveServer().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    root = tmp_path_factory.mktemp("official")
    fabricate_ade20k(root, 2, np.random.default_rng(0))
    return (root / NAME).read_bytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def served(server: ArchiveServer, data: bytes, **changes) -> sources.Download:
    """The official ADE20K entry, served by ``server`` with the published md5/size of ``data``."""
    server.files[NAME] = data
    fields = {"url": server.url(NAME), "md5": md5(data), "size": len(data), **changes}
    return dataclasses.replace(sources.DOWNLOADS["ade20k"], **fields)


class Sleeps(list):
    """An injected ``sleep``: records the delays, waits for none."""

    def __call__(self, seconds):
        self.append(seconds)


def quiet_fetch(download, into, **kw):
    logs = []
    kw.setdefault("sleep", Sleeps())
    path = fetch(download, into, progress=False, log=logs.append, **kw)
    return path, logs


# --- resuming -----------------------------------------------------------------------------------------


def test_transfer_cut_halfway_is_resumed_with_a_range_request(server, archive, tmp_path):
    half = len(archive) // 2
    download = served(server, archive)
    server.actions = [("cut", half)]
    sleeps = Sleeps()
    path, logs = quiet_fetch(download, tmp_path, sleep=sleeps)
    assert path == tmp_path / NAME
    assert sha256(path.read_bytes()) == sha256(archive)
    assert [r["range"] for r in server.requests] == [None, f"bytes={half}-"]
    assert server.requests[1]["sent"] == len(archive) - half
    assert not (tmp_path / f"{NAME}.part").exists()
    assert len(sleeps) == 1 and any(f"retry 1/5 in {sleeps[0]:.1f} s: transfer cut short at {half}" in m for m in logs)


def test_a_stalled_transfer_times_out_and_is_resumed(server, archive, tmp_path):
    download = served(server, archive)
    server.actions = [("stall", 777)]
    path, logs = quiet_fetch(download, tmp_path, timeout=0.3)
    assert path.read_bytes() == archive
    assert [r["range"] for r in server.requests] == [None, "bytes=777-"]
    assert any("retry 1/5" in m and "transfer cut at 777" in m for m in logs)


def test_part_from_an_earlier_run_is_resumed(server, archive, tmp_path):
    download = served(server, archive)
    kept = len(archive) // 3
    (tmp_path / f"{NAME}.part").write_bytes(archive[:kept])
    path, logs = quiet_fetch(download, tmp_path)
    assert path.read_bytes() == archive
    assert [r["range"] for r in server.requests] == [f"bytes={kept}-"]
    assert server.requests[0]["sent"] == len(archive) - kept  # only the remaining bytes
    assert any("resuming" in m for m in logs)
    assert not (tmp_path / f"{NAME}.part").exists()


def test_server_ignoring_range_restarts_from_zero_and_ends_right(server, archive, tmp_path):
    download = served(server, archive)
    server.ignore_range = True
    server.actions = [("cut", 1000)]
    path, logs = quiet_fetch(download, tmp_path)
    assert sha256(path.read_bytes()) == sha256(archive)
    assert [r["range"] for r in server.requests] == [None, "bytes=1000-"]
    assert server.requests[1]["sent"] == len(archive)
    assert any("ignored the Range request" in m and "from the start" in m for m in logs)


def test_complete_part_answered_416_is_taken_as_done_and_verified(server, archive, tmp_path):
    download = served(server, archive)
    (tmp_path / f"{NAME}.part").write_bytes(archive)
    path, logs = quiet_fetch(download, tmp_path)
    assert path.read_bytes() == archive
    assert [r["range"] for r in server.requests] == [f"bytes={len(archive)}-"]
    assert any("checking the md5" in m for m in logs)


def test_a_complete_file_already_there_is_not_fetched(server, archive, tmp_path):
    download = served(server, archive)
    (tmp_path / NAME).write_bytes(archive)
    path, logs = quiet_fetch(download, tmp_path)
    assert path == tmp_path / NAME and server.requests == []
    assert any("already in" in m for m in logs)


def test_progress_bar_goes_to_stderr(server, archive, tmp_path, capsys):
    download = served(server, archive)
    fetch(download, tmp_path, log=lambda m: None)
    assert (tmp_path / NAME).read_bytes() == archive
    assert NAME in capsys.readouterr().err


# --- refusals -----------------------------------------------------------------------------------------


def test_wrong_md5_is_refused_and_the_bytes_kept_apart(server, archive, tmp_path):
    download = served(server, archive, md5="0" * 32, size=None)
    with pytest.raises(PrepareError) as err:
        quiet_fetch(download, tmp_path)
    text = str(err.value)
    assert f"md5 {md5(archive)}, expected {'0' * 32}" in text
    assert server.url(NAME) in text
    assert f"{tmp_path / NAME}.bad-md5" in text
    assert not (tmp_path / NAME).exists() and not (tmp_path / f"{NAME}.part").exists()
    assert (tmp_path / f"{NAME}.bad-md5").read_bytes() == archive


def test_wrong_size_is_refused(server, archive, tmp_path):
    download = served(server, archive, size=len(archive) + 1)
    with pytest.raises(PrepareError) as err:
        quiet_fetch(download, tmp_path, retries=0)
    assert f"{len(archive)} bytes, expected {len(archive) + 1}" in str(err.value)
    assert not (tmp_path / NAME).exists()


def test_404_names_the_url_and_is_not_retried(server, archive, tmp_path):
    download = served(server, archive, url=server.url("moved.zip"))
    sleeps = Sleeps()
    with pytest.raises(PrepareError) as err:
        quiet_fetch(download, tmp_path, sleep=sleeps)
    assert server.url("moved.zip") in str(err.value) and "HTTP 404" in str(err.value)
    assert len(server.requests) == 1 and sleeps == []
    assert not (tmp_path / NAME).exists()


def test_503_twice_then_ok_succeeds_after_two_retries_with_growing_delays(server, archive, tmp_path):
    download = served(server, archive)
    server.actions = [("status", 503), ("status", 503)]
    sleeps = Sleeps()
    path, logs = quiet_fetch(download, tmp_path, sleep=sleeps, backoff=2.0)
    assert path.read_bytes() == archive
    assert len(server.requests) == 3
    assert len(sleeps) == 2 and 2.0 <= sleeps[0] < sleeps[1] and 4.0 <= sleeps[1] <= 4.4
    assert any("retry 1/5" in m and "HTTP 503" in m for m in logs)
    assert any("retry 2/5" in m for m in logs)


def test_retries_run_out_with_a_message(server, archive, tmp_path):
    download = served(server, archive)
    server.actions = [("status", 500)] * 3
    with pytest.raises(PrepareError) as err:
        quiet_fetch(download, tmp_path, retries=2)
    assert "gave up after 2 retries" in str(err.value) and "HTTP 500" in str(err.value)
    assert len(server.requests) == 3


def test_login_gated_download_is_not_fetched_without_a_mirror(server, archive, tmp_path):
    login = "https://example.invalid/register/"
    download = served(server, archive, login=login)
    with pytest.raises(PrepareError) as err:
        quiet_fetch(download, tmp_path)
    text = str(err.value)
    assert login in text and NAME in text and str(tmp_path) in text and "pnp-ovss prepare" in text
    assert server.requests == []
    # a mirror serving the same file name is used like any other host
    path, _ = quiet_fetch(dataclasses.replace(download, url="http://example.invalid/x"), tmp_path,
                          mirror=server.base_url + "/")
    assert path.read_bytes() == archive
    assert [r["path"] for r in server.requests] == [f"/{NAME}"]


def test_html_answer_gets_the_login_message_and_writes_nothing(server, archive, tmp_path):
    download = served(server, archive)
    server.actions = ["html"]
    with pytest.raises(PrepareError) as err:
        quiet_fetch(download, tmp_path)
    text = str(err.value)
    assert "HTML page" in text and "served only after a login" in text and str(tmp_path) in text
    assert not (tmp_path / NAME).exists()
    assert len(server.requests) == 1


def test_dataset_gated_files_are_listed_in_one_error_after_the_others(server, archive, tmp_path, monkeypatch):
    server.files["gtFine_trainvaltest.zip"] = b"x"
    monkeypatch.setitem(sources.DOWNLOADS, "ade20k", served(server, archive))
    for key in ("cityscapes_images", "cityscapes_gtfine"):  # gated: their URLs must never be asked
        monkeypatch.setitem(sources.DOWNLOADS, key, dataclasses.replace(sources.DOWNLOADS[key],
                                                                        url=server.url("never")))
    monkeypatch.setitem(plans.NEEDS, "gated_mix", ("cityscapes_images", "ade20k", "cityscapes_gtfine"))
    with pytest.raises(PrepareError) as err:
        fetch_for_dataset("gated_mix", tmp_path, progress=False, log=lambda m: None)
    text = str(err.value)
    assert text.count("https://www.cityscapes-dataset.com/register/") == 2
    assert "leftImg8bit_trainvaltest.zip" in text and "gtFine_trainvaltest.zip" in text and str(tmp_path) in text
    assert (tmp_path / NAME).read_bytes() == archive  # the plain one was fetched first
    assert [r["path"] for r in server.requests] == [f"/{NAME}"]


# --- the command --------------------------------------------------------------------------------------


def prepare(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["prepare", *args])
    return code, out.getvalue()


def test_cli_download_from_a_mirror_prepares_the_dataset_and_a_rerun_fetches_nothing(server, tmp_path, monkeypatch):
    official = tmp_path / "official"
    official.mkdir()
    info = fabricate_ade20k(official, 2, np.random.default_rng(1))
    data = (official / NAME).read_bytes()
    server.files[NAME] = data
    monkeypatch.setitem(sources.DOWNLOADS, "ade20k",
                        dataclasses.replace(sources.DOWNLOADS["ade20k"], url="http://example.invalid/ade.zip",
                                            md5=md5(data)))
    downloads, root = tmp_path / "downloads", tmp_path / "data"
    args = ("--dataset", "ade20k", "--download", "--mirror", server.base_url, "--downloads", str(downloads),
            "--data-root", str(root), "--quiet", "--no-check", "--jobs", "1")
    code, out = prepare(*args)
    assert code == 0, out
    assert (downloads / NAME).read_bytes() == data
    for stem in info["val"]:
        member = f"ADEChallengeData2016/images/validation/{stem}.jpg"
        assert (root / member).read_bytes() == info["members"][member]
    assert out.count("checking the md5") == 1  # verified by the download, not again by prepare
    assert len(server.requests) == 1

    code, out = prepare(*args)
    assert code == 0, out
    assert len(server.requests) == 1  # nothing fetched again
    assert "not downloaded" in out


def test_cli_mirror_without_download_is_an_error(tmp_path):
    code, out = prepare("--dataset", "ade20k", "--mirror", "http://127.0.0.1:9", "--downloads", str(tmp_path),
                        "--data-root", str(tmp_path / "d"), "--quiet")
    assert code == 1 and "--download" in out


def test_a_dataset_of_gated_files_only_gets_the_message_and_no_files(tmp_path, monkeypatch):
    monkeypatch.setitem(plans.NEEDS, "gated_only", ("cityscapes_gtfine",))
    into = tmp_path / "dl"
    with pytest.raises(PrepareError) as err:
        fetch_for_dataset("gated_only", into, progress=False, log=lambda m: None)
    text = str(err.value)
    assert "register at https://www.cityscapes-dataset.com/register/" in text
    assert "gtFine_trainvaltest.zip" in text and f"put it in {into}/" in text
    assert Path(into).is_dir() and not list(Path(into).iterdir())
