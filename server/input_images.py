"""Input images of a request: uploaded files or images named by URL (fetched under ``sgld.url_inputs``' rules),
read as PIL images with a 400 naming the field for each problem."""

from __future__ import annotations

from typing import Any

from sgld.errors import UserError

from server.schemas import Fields, bad, read_image_upload


def named_images(fields: Fields, names: tuple[str, ...], limits: Any) -> list[tuple[str, Any]]:
    """(field, PIL image) for every image the fields ``names`` give, in order: uploads first, then URLs (a string
    or a list of them; http(s) or data:image)."""
    uploads = [(name, upload) for name in names for upload in fields.files.get(name, [])]
    urls = []
    for name in names:
        value = fields.values.get(name)
        items = value if isinstance(value, list) else [] if value in (None, "") else [value]
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise bad(name, f"'{name}' must be an http(s) or data:image URL, or an uploaded image file")
            urls.append((name, item.strip()))
    images = [(name, read_image_upload(upload, name, limits.max_pixels)) for name, upload in uploads]
    return images + [(name, url_image(url, name, limits)) for name, url in urls]


def url_image(url: str, param: str, limits: Any):
    """The image a URL names (PIL), fetched under the server's limits; a 400 naming ``param`` for each problem."""
    from sgld.url_inputs import fetch_image

    try:
        data = fetch_image(url, max_bytes=limits.max_body_mb * 1024 * 1024, allow_private=limits.allow_private_urls,
                           param=param)
    except UserError as exc:
        raise bad(param, str(exc)) from None
    return read_image_upload(data, param, limits.max_pixels)


def count_images(fields: Fields, names: tuple[str, ...]) -> int:
    """How many images the fields ``names`` give (uploads and URLs), before any is read or fetched."""
    count = sum(len(fields.files.get(name, [])) for name in names)
    for name in names:
        value = fields.values.get(name)
        count += len(value) if isinstance(value, list) else 0 if value in (None, "") else 1
    return count
