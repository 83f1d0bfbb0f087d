"""`vidchat ui`: the playground app under uvicorn, on loopback unless told otherwise.

The socket is bound here (not by uvicorn) so `--port 0` can print the port it got, and so a
port already in use fails as one line before anything starts.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from vidchat.errors import VidchatError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "is_loopback", "run_ui"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise VidchatError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another "
                           "--port (0 picks a free one)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run_ui(server: str | None = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
           model: str | None = None, api_key: str | None = None) -> int:
    """Serve the playground until interrupted; its uploads are deleted when it stops."""
    try:
        import uvicorn

        from vidchat.ui.app import LOOPBACK_HOSTS, create_app
    except ImportError as exc:
        raise VidchatError(f"the playground needs the ui extra ({exc.name} is missing): "
                           "pip install 'vidchat[ui]'") from None
    loopback = is_loopback(host)
    app = create_app(server, api_key=api_key, model=model,
                     allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    sock = _bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"vidchat ui: http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    if not loopback:
        print("vidchat ui: warning: listening beyond this machine; the page has no login, "
              "anyone who reaches it can upload videos and use your server",
              file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
