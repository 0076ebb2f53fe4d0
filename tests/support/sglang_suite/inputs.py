"""The input images SGLang's cases fetch from the internet, served instead from 127.0.0.1.

Each image keeps the file name of the URL it stands for (``TI2I_Qwen_Image_Edit_Input.jpg``, ``edit2509_1.jpg``,
...), so a case's URL maps to a local one by its last path part. The server runs in a daemon thread for the test
session; sgld fetches from it only with private URLs allowed (``SGLD_ALLOW_PRIVATE_URLS=1``).
"""

from __future__ import annotations

import functools
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

# name -> (width, height, seed): small, and unlike each other so each input moves the output differently.
IMAGES = {
    "TI2I_Qwen_Image_Edit_Input.jpg": (96, 80, 1),
    "edit2509_1.jpg": (80, 64, 2),
    "edit2509_2.jpg": (64, 96, 3),
    "600x600bb.jpg": (96, 96, 4),
}


@functools.lru_cache(maxsize=None)
def image_bytes(name: str) -> bytes:
    """The JPEG served as ``name``: a seeded gradient with a block of colour."""
    import numpy as np
    from PIL import Image

    width, height, seed = IMAGES[name]
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 60 * seed % 255)], axis=-1)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    pixels[top:top + height // 3, left:left + width // 3] = rng.integers(0, 256, 3)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format="JPEG", quality=95)
    return out.getvalue()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        name = urlparse(self.path).path.rsplit("/", 1)[-1]
        if name not in IMAGES:
            self.send_error(404)
            return
        body = image_bytes(name)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: the suite's output is the server's
        pass


class InputServer:
    """A threaded HTTP server on a free 127.0.0.1 port serving ``IMAGES``."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="sglang-suite-inputs", daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, original: str) -> str:
        """The local URL standing for ``original`` (same file name); KeyError for an image the suite lacks."""
        name = urlparse(original).path.rsplit("/", 1)[-1]
        if name not in IMAGES:
            raise KeyError(f"the suite serves no input named {name!r} (from {original})")
        return f"{self.base}/inputs/{name}"
