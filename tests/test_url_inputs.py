"""sgld.url_inputs against a real HTTP server on 127.0.0.1: what is fetched, what is refused, and that the
connection goes to the address that was checked."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from sgld.errors import UserError
from sgld.url_inputs import blocked, fetch_image, localize_image_urls, shown


def png_bytes(size=(24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    routes: dict = {}
    hosts: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Handler.hosts.append(self.headers["Host"])
        status, headers, body = Handler.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    Handler.routes.update({
        "/fox.png": (200, {"Content-Type": "image/png"}, png_bytes()),
        "/notes.txt": (200, {"Content-Type": "image/png"}, b"not an image"),
        "/hop": (302, {"Location": "/fox.png"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/big.png": (200, {}, png_bytes((400, 400))),
    })
    yield base, server.server_port
    server.shutdown()


def test_public_only_unless_allowed(site):
    base, port = site
    with pytest.raises(UserError) as refused:
        fetch_image(f"{base}/fox.png", max_bytes=10**6, allow_private=False)
    assert "private, loopback or link-local" in str(refused.value) and "--allow-private-urls" in str(refused.value)
    assert Image.open(io.BytesIO(fetch_image(f"{base}/fox.png", max_bytes=10**6, allow_private=True))).size == (24, 16)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.7", "172.16.5.5", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1%lo", "fc00::1",
                                     "::ffff:127.0.0.1", "::ffff:10.0.0.1"])
def test_every_non_public_address_is_blocked(address):
    assert blocked(address)


def test_public_addresses_pass():
    assert not blocked("93.184.216.34") and not blocked("2606:4700:4700::1111")


def test_the_connection_goes_to_the_address_that_was_checked(site):
    """A name resolved once: the request goes to that address (Host: the name), never to a second lookup's answer."""
    base, port = site
    calls = []

    def resolve(host, _port):
        calls.append(host)
        return ["127.0.0.1"]

    data = fetch_image(f"http://images.sgld.test:{port}/fox.png", max_bytes=10**6, allow_private=True, resolve=resolve)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and calls == ["images.sgld.test"]
    assert Handler.hosts[-1] == f"images.sgld.test:{port}"


def test_redirects_are_followed_checked_and_capped(site, monkeypatch):
    base, port = site
    assert fetch_image(f"{base}/hop", max_bytes=10**6, allow_private=True)[:4] == b"\x89PNG"
    with pytest.raises(UserError, match="redirects more than 3 times"):
        fetch_image(f"{base}/loop", max_bytes=10**6, allow_private=True)
    # 127.0.0.1 taken as public here: its redirect to a private address (127.0.0.2) is checked and refused unfetched.
    monkeypatch.setattr("sgld.url_inputs.blocked", lambda address: address != "127.0.0.1")
    Handler.routes["/to-private"] = (302, {"Location": f"http://127.0.0.2:{port}/fox.png"}, b"")
    assert fetch_image(f"{base}/fox.png", max_bytes=10**6, allow_private=False)[:4] == b"\x89PNG"
    with pytest.raises(UserError, match="127.0.0.2"):
        fetch_image(f"{base}/to-private", max_bytes=10**6, allow_private=False)


def test_size_content_and_scheme_checks(site):
    base, _ = site
    with pytest.raises(UserError, match="limit"):
        fetch_image(f"{base}/big.png", max_bytes=1000, allow_private=True)
    with pytest.raises(UserError, match="not a PNG, JPEG or WebP"):
        fetch_image(f"{base}/notes.txt", max_bytes=10**6, allow_private=True)
    with pytest.raises(UserError, match="HTTP 404"):
        fetch_image(f"{base}/nope.png", max_bytes=10**6, allow_private=True)
    for url in ("file:///etc/passwd", "ftp://example.com/x.png", "gopher://x/"):
        with pytest.raises(UserError, match="only http and https"):
            fetch_image(url, max_bytes=10**6, allow_private=True)
    inline = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert fetch_image(inline, max_bytes=10**6, allow_private=False)[:4] == b"\x89PNG"
    with pytest.raises(UserError, match="data:image"):
        fetch_image("data:text/plain;base64,aGk=", max_bytes=10**6, allow_private=False)


def test_messages_hide_credentials_and_queries():
    assert shown("https://user:secret@example.com:8443/a/b.png?token=abc#x") == "https://example.com:8443/a/b.png"


def test_localized_copies_are_named_by_their_url(site, tmp_path):
    base, _ = site
    first = localize_image_urls([f"{base}/fox.png", "local.png"], max_bytes=10**6, allow_private=True, folder=tmp_path)
    again = localize_image_urls(f"{base}/fox.png", max_bytes=10**6, allow_private=True, folder=tmp_path)
    assert first[1] == "local.png" and first[0] == again and again.endswith(".png")
