"""Input images named by URL (``http://``, ``https://``, ``data:image/...``), fetched once and safely.

The server fetches what a request names and the CLI what ``--image-path`` names, so sgld must not
be a door into the network it runs in: private, loopback, link-local, multicast and reserved
addresses are refused unless ``--allow-private-urls`` (``SGLD_ALLOW_PRIVATE_URLS=1``) says
otherwise. A host name is resolved once and the connection goes to the address that was checked (a
second lookup could answer differently: DNS rebinding). Redirects are followed up to
``MAX_REDIRECTS`` times, each target checked the same way; the body is read within a size cap and
timeouts and must be a PNG, JPEG or WebP image. Messages name the URL without its query or
credentials (they may carry secrets).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import ipaddress
import os
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urljoin, urlsplit

from sgld.errors import UserError

MAX_REDIRECTS = 3
CONNECT_TIMEOUT_S = 10.0
# The whole download, however slowly the server sends it.
TOTAL_TIMEOUT_S = 30.0
SCHEMES = ("http", "https")

# Resolves (host, port) to IP address strings; tests substitute it to point a public name anywhere.
Resolver = Callable[[str, int], list[str]]


def is_url(text: object) -> bool:
    """Whether an input names a URL (anything with a scheme) rather than a local file."""
    return isinstance(text, str) and ("://" in text or text[:5].lower() == "data:")


def shown(url: str) -> str:
    """The URL as messages and logs show it: no credentials, query or fragment."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "data":
        return "a data: URL"
    if not parts.scheme:
        return repr(parts.path[:80])  # not a URL at all: the text itself
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def blocked(address: str) -> bool:
    """Whether an IP address is outside the public internet (private, loopback, link-local, multicast, reserved...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) names a link-local address
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def sniff_image(data: bytes) -> Optional[str]:
    """PNG, JPEG or WEBP when ``data`` starts like one; None otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def fetch_image(url: str, *, max_bytes: int, allow_private: bool, param: str = "url",
                resolve: Resolver = _system_resolver) -> bytes:
    """The bytes of the image at ``url``; UserError naming ``param`` for anything wrong (scheme, address,
    status, size, time, content). ``allow_private``: ``server.allow_private_urls`` (SGLD_ALLOW_PRIVATE_URLS sets it)."""
    if url[:5].lower() == "data:":
        data = _data_url(url, max_bytes, param)
    else:
        data = _download(url, max_bytes, allow_private, param, resolve)
    if sniff_image(data) is None:
        raise UserError(f"{param}: {shown(url)} is not a PNG, JPEG or WebP image", param=param)
    return data


def _data_url(url: str, max_bytes: int, param: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
        raise UserError(f"{param}: a data: URL must be data:image/<type>;base64,<data>", param=param)
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise UserError(f"{param}: the data: URL holds more than {max_bytes} bytes", param=param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{param}: the data: URL is not valid base64", param=param) from None


def _download(url: str, max_bytes: int, allow_private: bool, param: str, resolve: Resolver) -> bytes:
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise UserError(f"{param}: {shown(url)}: only http and https URLs (or data:image) are fetched", param=param)
        if not parts.hostname:
            raise UserError(f"{param}: {shown(url)} names no host", param=param)
        port = parts.port or (443 if scheme == "https" else 80)
        address = _checked_address(parts.hostname, port, allow_private, url, param, resolve)
        conn = _connection(scheme, parts.hostname, port, address, deadline)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target, headers={"User-Agent": "sgld", "Accept": "image/*"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise UserError(f"{param}: {shown(url)} redirects nowhere", param=param)
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise UserError(f"{param}: {shown(url)} answered HTTP {response.status}", param=param)
            return _read_capped(response, max_bytes, deadline, url, param)
        except (OSError, http.client.HTTPException) as exc:
            raise UserError(f"{param}: could not fetch {shown(url)} ({type(exc).__name__}: {exc})", param=param) from None
        finally:
            conn.close()
    raise UserError(f"{param}: {shown(url)} redirects more than {MAX_REDIRECTS} times", param=param)


def _checked_address(host: str, port: int, allow_private: bool, url: str, param: str, resolve: Resolver) -> str:
    """The address to connect to: the first the name resolves to that may be fetched."""
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise UserError(f"{param}: could not resolve the host of {shown(url)} ({exc})", param=param) from None
    allowed = [a for a in addresses if allow_private or not blocked(a)]
    if not allowed:
        raise UserError(f"{param}: {shown(url)} resolves to a private, loopback or link-local address "
                        f"({', '.join(addresses) or 'none'}); sgld fetches only public addresses unless started "
                        "with --allow-private-urls (SGLD_ALLOW_PRIVATE_URLS=1)", param=param)
    return allowed[0]


def _connection(scheme: str, host: str, port: int, address: str, deadline: float) -> http.client.HTTPConnection:
    """A connection to ``address`` that speaks to ``host`` (its Host header; for https its certificate and SNI)."""
    timeout = max(0.1, min(CONNECT_TIMEOUT_S, deadline - time.monotonic()))
    if scheme == "https":
        context = ssl.create_default_context()
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        raw = socket.create_connection((address, port), timeout=timeout)
        try:
            conn.sock = context.wrap_socket(raw, server_hostname=host)
        except (OSError, ssl.SSLError):
            raw.close()
            raise
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = socket.create_connection((address, port), timeout=timeout)  # never a second lookup
    return conn


def _read_capped(response: http.client.HTTPResponse, max_bytes: int, deadline: float, url: str, param: str) -> bytes:
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise UserError(f"{param}: {shown(url)} is {int(length)} bytes; the limit is {max_bytes}", param=param)
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise UserError(f"{param}: {shown(url)} took longer than {TOTAL_TIMEOUT_S:g} s", param=param)
        chunk = response.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise UserError(f"{param}: {shown(url)} is larger than the limit of {max_bytes} bytes", param=param)
        chunks.append(chunk)


def localize_image_urls(paths, *, max_bytes: int, allow_private: bool, folder: Path):
    """``image_path`` (one path or a list) with each URL replaced by a local copy of its image; local paths kept.

    A copy is named by its URL's hash, so a rerun names the same file (a prompt set's recorded settings
    stay equal) and refreshes it.
    """
    items = paths if isinstance(paths, (list, tuple)) else [paths]
    if not any(is_url(item) for item in items):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    local = []
    for item in items:
        if not is_url(item):
            local.append(item)
            continue
        data = fetch_image(item, max_bytes=max_bytes, allow_private=allow_private, param="image_path")
        path = folder / f"{hashlib.sha256(item.encode()).hexdigest()[:32]}.{sniff_image(data).lower()}"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fetch-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # whole, even when runs fetch the same URL at once
        local.append(str(path))
    return local if isinstance(paths, (list, tuple)) else local[0]
