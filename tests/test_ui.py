"""The playground's API without a browser or an engine: forms, uploads, sampling, errors.

The page itself, against the real server, is tested in a browser (tests/test_ui_browser.py).
"""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from vidchat.client import FetchLimits, sample_frames
from vidchat.errors import PlaygroundError
from vidchat.serve_process import free_port
from vidchat.ui.app import LOOPBACK_HOSTS, create_app
from vidchat.ui.forms import parse_ask, parse_sample
from vidchat.ui.store import KEPT_UPLOADS


@pytest.fixture
def dead_server() -> str:
    """A server URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture
def client(dead_server: str, tmp_path: Path):
    app = create_app(dead_server, max_retries=0, upload_root=str(tmp_path),
                     max_upload_bytes=2 << 20)
    with TestClient(app) as c:
        yield c


def upload(client: TestClient, path: Path) -> dict:
    resp = client.post(f"/api/upload?name={path.name}", content=path.read_bytes(),
                       headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 200, resp.text
    return resp.json()


def parse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# -- forms -----------------------------------------------------------------------------------


def test_sample_form_keeps_only_what_is_set():
    form = parse_sample({"video": "abc", "frames": "8", "fps": "", "start": "1.5",
                         "end": None, "mode": "uniform"})
    assert (form.video_id, form.url, form.frames) == ("abc", None, 8)
    assert form.sampling == {"start": 1.5}  # uniform is the library's default: not sent


def test_sample_form_passes_a_mode_through():
    form = parse_sample({"url": " https://example.com/a.mp4 ", "mode": "scenes"})
    assert form.url == "https://example.com/a.mp4"
    assert form.sampling == {"mode": "scenes"}


@pytest.mark.parametrize("form, message", [
    ({"frames": 8}, "choose one video"),
    ({"video": "a", "url": "https://x/a.mp4"}, "choose one video"),
    ({"video": "a", "frames": "eight"}, "frames must be a number, got 'eight'"),
    ({"video": "a", "frames": 2.5}, "frames must be a whole number"),
    ({"video": "a", "fps": "nan"}, "fps must be a finite number"),
    ({"video": "a", "mode": "random"}, "mode must be one of uniform, keyframes, scenes"),
])
def test_sample_form_errors_say_what_to_do(form, message):
    with pytest.raises(PlaygroundError, match=message):
        parse_sample(form)


def test_ask_form_one_question_a_line():
    form = parse_ask({"sample": "s", "questions": "Who?\n\n  What?  \n", "max_tokens": "32",
                      "temperature": "0.5", "timestamps": True})
    assert form.questions == ("Who?", "What?")
    assert form.gen == {"max_tokens": 32, "temperature": 0.5}
    assert form.timestamps is True


@pytest.mark.parametrize("form, message", [
    ({"questions": "Who?"}, "sample the video first"),
    ({"sample": "s", "questions": " \n "}, "type a question first"),
    ({"sample": "s", "questions": "\n".join(["q"] * 9)}, "ask at most 8"),
    ({"sample": "s", "questions": "q", "max_tokens": 0}, "max tokens must be at least 1"),
])
def test_ask_form_errors(form, message):
    with pytest.raises(PlaygroundError, match=message):
        parse_ask(form)


# -- the API ---------------------------------------------------------------------------------


def test_page_and_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="strip"' in page.text
    assert "answer_events" not in page.text
    assert client.get("/static/playground.js").status_code == 200
    assert client.get("/static/playground.css").status_code == 200


def test_upload_then_sample_shows_the_library_frames(client, h264_clip):
    up = upload(client, h264_clip)
    assert up["size"] == h264_clip.stat().st_size and up["name"] == h264_clip.name
    resp = client.post("/api/sample", json={"video": up["id"], "frames": 8})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    reference = sample_frames(h264_clip, 8)
    assert [t["t"] for t in body["thumbnails"]] == pytest.approx(reference.timestamps)
    assert [t["index"] for t in body["thumbnails"]] == reference.indices
    # The label the model reads with timestamps on, Python's rounding (0.25 s -> "0:00.2").
    assert [t["label"] for t in body["thumbnails"]] == [
        f"Frame at {int(t // 60)}:{t % 60:04.1f}:" for t in reference.timestamps]
    assert body["image_tokens"] == 8 * 729 and body["duration"] == pytest.approx(4.0)
    head, b64 = body["thumbnails"][0]["src"].split(",", 1)
    assert head == "data:image/jpeg;base64"
    import base64

    assert Image.open(io.BytesIO(base64.b64decode(b64))).size == (384, 384)


def test_window_and_fps_reach_the_sampler(client, h264_clip):
    up = upload(client, h264_clip)
    body = client.post("/api/sample", json={"video": up["id"], "frames": 8, "fps": 2,
                                            "start": 1, "end": 3}).json()
    reference = sample_frames(h264_clip, 8, fps=2, start=1, end=3)
    assert [t["t"] for t in body["thumbnails"]] == pytest.approx(reference.timestamps)
    assert len(body["thumbnails"]) == 4


def test_a_broken_video_is_a_message(client, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video\n" * 200)
    up = upload(client, broken)
    resp = client.post("/api/sample", json={"video": up["id"]})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "VideoDecodeError"
    assert "Traceback" not in resp.text


def test_a_bad_sampling_value_is_the_library_message(client, h264_clip):
    up = upload(client, h264_clip)
    resp = client.post("/api/sample", json={"video": up["id"], "start": 3, "end": 1})
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "SamplingArgumentError"
    assert "must come after start" in resp.json()["error"]["message"]


def test_the_mode_reaches_sample_frames(client, h264_clip):
    up = upload(client, h264_clip)
    resp = client.post("/api/sample", json={"video": up["id"], "mode": "keyframes"})
    if "mode" in inspect.signature(sample_frames).parameters:
        assert resp.status_code == 200, resp.text
        assert resp.json()["sampling"]["mode"] == "keyframes"
    else:  # not supported on this branch yet: the library's own complaint, as a message
        assert resp.status_code == 500
        assert "mode" in resp.json()["error"]["message"]
        assert "Traceback" not in resp.text


def test_an_upload_over_the_cap_is_refused_and_removed(client, tmp_path):
    big = b"\0" * ((2 << 20) + 1)
    resp = client.post("/api/upload?name=big.mp4", content=big,
                       headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 413
    assert "larger than 2 MiB" in resp.json()["error"]["message"]
    # Streamed without a length: cut off while it arrives, its partial file deleted.
    resp = client.post("/api/upload?name=big.mp4", content=iter([big[:1 << 20]] * 3),
                       headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 413
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_only_the_latest_uploads_are_kept_and_all_go_at_shutdown(dead_server, tmp_path,
                                                                 h264_clip):
    app = create_app(dead_server, max_retries=0, upload_root=str(tmp_path))
    with TestClient(app) as c:
        ids = [upload(c, h264_clip)["id"] for _ in range(KEPT_UPLOADS + 1)]
        assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == KEPT_UPLOADS
        gone = c.post("/api/sample", json={"video": ids[0]})
        assert gone.status_code == 404 and "upload the video again" in gone.text
        assert c.post("/api/sample", json={"video": ids[-1]}).status_code == 200
    assert list(tmp_path.iterdir()) == []


def test_urls_go_through_the_safe_downloader(client):
    resp = client.post("/api/sample", json={"url": "http://127.0.0.1:9/clip.mp4"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "RemoteVideoError" and "private or local address" in error["message"]


def test_a_url_is_downloaded_by_the_client_and_sampled(dead_server, tmp_path, h264_clip):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(h264_clip.parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    # The test server is on loopback, which the downloader refuses unless told to trust it.
    app = create_app(dead_server, max_retries=0, upload_root=str(tmp_path),
                     fetch_limits=FetchLimits(allow_private=True))
    try:
        with TestClient(app) as c:
            url = f"http://127.0.0.1:{httpd.server_port}/{h264_clip.name}"
            resp = c.post("/api/sample", json={"url": url, "frames": 4})
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["source"] == url
    assert [t["t"] for t in body["thumbnails"]] == pytest.approx(
        sample_frames(h264_clip, 4).timestamps)


def test_server_down_is_a_message(client, h264_clip):
    info = client.get("/api/info").json()
    assert info["error"]["type"] == "ServerUnavailableError"
    sample_id = client.post("/api/sample", json={"video": upload(client, h264_clip)["id"]}
                            ).json()["id"]
    resp = client.post("/api/ask", json={"sample": sample_id, "questions": "Who?\nWhat?"})
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = parse_events(resp.text)
    errors = [e for name, e in events if name == "error"]
    assert [e["q"] for e in errors] == [0, 1]
    assert {e["type"] for e in errors} == {"ServerUnavailableError"}
    assert events[-1][0] == "end"


def test_unknown_frames_and_bad_bodies_are_messages(client):
    resp = client.post("/api/ask", json={"sample": "nope", "questions": "Who?"})
    assert resp.status_code == 404 and "sample the video again" in resp.text
    resp = client.post("/api/sample", content=b'{"video": "a"}',
                       headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415  # a cross-site form cannot post here without a preflight
    resp = client.post("/api/sample", content=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and "not valid JSON" in resp.text


def test_a_loopback_playground_answers_loopback_names_only(dead_server, tmp_path):
    app = create_app(dead_server, max_retries=0, upload_root=str(tmp_path),
                     allowed_hosts=LOOPBACK_HOSTS)
    with TestClient(app, base_url="http://127.0.0.1:8090") as c:
        assert c.get("/").status_code == 200
    with TestClient(app, base_url="http://attacker.example:8090") as c:
        assert c.get("/api/info").status_code == 400  # DNS rebinding


def test_a_busy_port_is_one_line(capsys):
    import socket

    from vidchat.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        code = main(["ui", "--port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vidchat: error: cannot listen on 127.0.0.1:") and "--port" in err
    assert len(err.strip().splitlines()) == 1
