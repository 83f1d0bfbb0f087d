"""Remote videos: fetched by the client within limits, against loopback servers that redirect,
trickle and over-send. No connection ever leaves 127.0.0.1: addresses outside it are refused
before any connection is made."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vidchat.client import FetchLimits, sample_frames
from vidchat.client._remote import fetch_video, resolve_checked
from vidchat.errors import RemoteVideoError, VidchatError

PAYLOAD = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64  # 16 KiB "video"
SERVED_CLIP: dict[str, bytes] = {}  # a real video the origin serves at /clip.mp4
LOCAL = FetchLimits(trusted_addresses=frozenset({"127.0.0.1"}), total_timeout_s=3,
                    read_timeout_s=2, max_bytes=64 * 1024)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        port = self.server.server_address[1]
        routes = {
            "/video.mp4": lambda: self._send(PAYLOAD),
            "/hop1": lambda: self._redirect(f"http://127.0.0.1:{port}/hop2"),
            "/hop2": lambda: self._redirect("/video.mp4"),
            "/loop": lambda: self._redirect("/loop"),
            "/to-metadata": lambda: self._redirect("http://169.254.169.254/latest/meta-data"),
            "/to-file": lambda: self._redirect("file:///etc/passwd"),
            "/big-declared": lambda: self._send(b"x" * 1024, declared=10 << 20),
            "/oversend": self._oversend,
            "/trickle": self._trickle,
            "/missing": lambda: self.send_error(404),
            "/clip.mp4": lambda: self._send(SERVED_CLIP["bytes"]),
        }
        routes.get(self.path, lambda: self.send_error(404))()

    def _send(self, body: bytes, declared: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(declared or len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def _redirect(self, where: str) -> None:
        self.send_response(302)
        self.send_header("Location", where)
        self.end_headers()

    def _oversend(self) -> None:  # no Content-Length, then far more than the cap
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(64):
                self.wfile.write(b"y" * 65536)
        except OSError:
            pass

    def _trickle(self) -> None:  # a byte every 0.3 s: never silent long enough to time out
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def fetch(url: str, limits: FetchLimits = LOCAL) -> bytes:
    with fetch_video(url, limits) as path:
        data = path.read_bytes()
    assert not path.exists()  # the temporary file is always removed
    return data


def test_a_plain_download_lands_in_a_temporary_file(origin: str):
    assert fetch(origin + "/video.mp4") == PAYLOAD


def test_redirects_are_followed_and_each_hop_rechecked(origin: str):
    assert fetch(origin + "/hop1") == PAYLOAD
    with pytest.raises(RemoteVideoError, match="redirects"):
        fetch(origin + "/loop")
    with pytest.raises(RemoteVideoError, match="private or local address"):
        fetch(origin + "/to-metadata")  # refused before any connection
    with pytest.raises(RemoteVideoError, match="only http"):
        fetch(origin + "/to-file")


def test_loopback_is_refused_unless_trusted(origin: str):
    with pytest.raises(RemoteVideoError, match="private or local address"):
        fetch(origin + "/video.mp4", FetchLimits())


def test_size_cap_holds_for_declared_and_undeclared_lengths(origin: str):
    with pytest.raises(RemoteVideoError, match="larger than"):
        fetch(origin + "/big-declared")
    with pytest.raises(RemoteVideoError, match="larger than"):
        fetch(origin + "/oversend")


def test_a_trickling_server_hits_the_total_timeout(origin: str):
    t0 = time.monotonic()
    with pytest.raises(RemoteVideoError, match="did not finish"):
        fetch(origin + "/trickle")
    assert time.monotonic() - t0 < LOCAL.total_timeout_s + 2


def test_http_errors_are_typed(origin: str):
    with pytest.raises(RemoteVideoError, match="HTTP 404"):
        fetch(origin + "/missing")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.5", "192.168.1.1",
                                     "169.254.169.254", "[::1]", "[fd00::1]",
                                     "[::ffff:127.0.0.1]", "0.0.0.0"])
def test_private_and_metadata_ranges_are_refused_without_connecting(address: str):
    with pytest.raises(RemoteVideoError, match="private or local"):
        resolve_checked(f"http://{address}/v.mp4")


@pytest.mark.parametrize("url", ["ftp://example.com/v.mp4", "file:///etc/passwd",
                                 "gopher://x/"])
def test_only_http_schemes(url: str):
    with pytest.raises(VidchatError, match="only http"):
        resolve_checked(url)


def test_public_addresses_pass_the_check():
    assert resolve_checked("https://93.184.215.14/v.mp4") == ("https", "93.184.215.14", 443)


def test_temporary_file_is_removed_even_when_the_caller_fails(origin: str):
    kept: list[Path] = []
    with pytest.raises(RuntimeError), fetch_video(origin + "/video.mp4", LOCAL) as path:
        kept.append(path)
        raise RuntimeError("caller failed")
    assert not kept[0].exists()


def test_sample_frames_takes_an_http_url_with_the_same_limits(origin: str, h264_clip: Path):
    SERVED_CLIP["bytes"] = h264_clip.read_bytes()
    trusted = FetchLimits(trusted_addresses=frozenset({"127.0.0.1"}))
    remote = sample_frames(origin + "/clip.mp4", 3, fetch_limits=trusted)
    local = sample_frames(h264_clip, 3)
    assert remote.timestamps == local.timestamps and remote.indices == local.indices
    assert [im.tobytes() for im in remote.images] == [im.tobytes() for im in local.images]
    assert remote.source == origin + "/clip.mp4"
    with pytest.raises(RemoteVideoError, match="private or local address"):
        sample_frames(origin + "/clip.mp4", 3)  # default limits: loopback is not fetched
