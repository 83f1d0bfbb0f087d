"""Download an http(s) video for sampling, safely.

The client fetches remote videos itself (the server never fetches URLs), within limits:
http(s) only; connect, read and total timeouts; a size cap checked while streaming; a few
redirects, each re-checked; and addresses that resolve to loopback, private, link-local,
multicast or reserved ranges (cloud metadata included) refused unless explicitly allowed.
The connection goes to the address that was checked (no second DNS lookup to rebind).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from vidchat.errors import RemoteVideoError


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 1 << 30  # 1 GiB
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0  # silence between two chunks
    total_timeout_s: float = 300.0  # the whole download, however it trickles
    max_redirects: int = 3
    allow_private: bool = False  # loopback, private, link-local (metadata) addresses
    # Addresses trusted even though they are private (e.g. one internal media host).
    trusted_addresses: frozenset[str] = frozenset()


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified)


def resolve_checked(url: str, allow_private: bool = False,
                    trusted: frozenset[str] = frozenset()) -> tuple[str, str, int]:
    """Validate `url` and return (scheme, one safe IP address, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RemoteVideoError(f"only http(s) video URLs are fetched, not {parts.scheme!r}: "
                               "download it yourself and pass the file path", source=url)
    if not parts.hostname:
        raise RemoteVideoError(f"{url!r} has no host name", source=url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RemoteVideoError(f"cannot resolve {parts.hostname} ({exc.strerror}): check the "
                               "URL", source=url) from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not allow_private:
        bad = [str(a) for a in addresses if _blocked(a) and str(a) not in trusted]
        if bad:
            raise RemoteVideoError(
                f"{parts.hostname} resolves to a private or local address ({bad[0]}); refused "
                "to protect internal services: pass allow_private=True if you trust this URL",
                source=url)
    return parts.scheme, str(addresses[0]), port


@contextmanager
def fetch_video(url: str, limits: FetchLimits | None = None) -> Iterator[Path]:
    """Download `url` to a temporary file, yield its path, delete it afterwards."""
    limits = limits or FetchLimits()
    fd, name = tempfile.mkstemp(prefix="vidchat-", suffix=Path(urlsplit(url).path).suffix[:8])
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as sink:
            _download(url, sink, limits)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _download(url: str, sink, limits: FetchLimits) -> None:
    deadline = time.monotonic() + limits.total_timeout_s
    timeout = httpx.Timeout(limits.read_timeout_s, connect=limits.connect_timeout_s)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as http:
        current = url
        for _hop in range(limits.max_redirects + 1):
            scheme, ip, port = resolve_checked(current, limits.allow_private,
                                               limits.trusted_addresses)
            parts = urlsplit(current)
            host_ip = f"[{ip}]" if ":" in ip else ip
            pinned = parts._replace(netloc=f"{host_ip}:{port}").geturl()
            headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
            ext = {"sni_hostname": parts.hostname} if scheme == "https" else {}
            try:
                with http.stream("GET", pinned, headers=headers, extensions=ext) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location")
                        if not location:
                            raise RemoteVideoError("a redirect without a Location header",
                                                   source=url)
                        current = urljoin(current, location)
                        continue
                    if resp.status_code != 200:
                        raise RemoteVideoError(
                            f"the video URL answered HTTP {resp.status_code}: check the URL",
                            source=url)
                    declared = int(resp.headers.get("content-length") or 0)
                    if declared > limits.max_bytes:
                        raise _too_big(url, limits)
                    got = 0
                    # No chunk size: each network read is checked as it arrives, so a server
                    # that trickles bytes meets the total deadline (a fixed chunk size would
                    # wait for 64 KiB before looking at the clock).
                    for chunk in resp.iter_bytes():
                        got += len(chunk)
                        if got > limits.max_bytes:
                            raise _too_big(url, limits)
                        if time.monotonic() > deadline:
                            raise _too_slow(url, limits)
                        sink.write(chunk)
                    return
            except httpx.TimeoutException:
                raise _too_slow(url, limits) from None
            except httpx.HTTPError as exc:
                raise RemoteVideoError(f"downloading the video failed ({exc.__class__.__name__}"
                                       "): check the URL and the network", source=url) from None
        raise RemoteVideoError(f"more than {limits.max_redirects} redirects: refused",
                               source=url)


def _too_big(url: str, limits: FetchLimits) -> RemoteVideoError:
    return RemoteVideoError(f"the video is larger than {limits.max_bytes // (1 << 20)} MiB: "
                            "download a shorter clip or raise max_bytes", source=url)


def _too_slow(url: str, limits: FetchLimits) -> RemoteVideoError:
    return RemoteVideoError(f"the download did not finish within {limits.total_timeout_s:.0f} s "
                            f"(or stalled for {limits.read_timeout_s:.0f} s): try again or "
                            "download it yourself", source=url)
