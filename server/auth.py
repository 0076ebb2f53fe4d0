"""The API key check: one function for every route that needs the key and for the playground's data."""

from __future__ import annotations

import hmac
from typing import Mapping


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; "" for any other scheme (schemes are
    case-insensitive, RFC 9110 §11.1)."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def has_api_key(headers: Mapping[str, str], api_key: str) -> bool:
    """Whether the request carries ``api_key`` as its bearer token (compared in constant time)."""
    return hmac.compare_digest(bearer_token(headers.get("Authorization", "")).encode(), api_key.encode())
