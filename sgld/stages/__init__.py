"""Pipeline stages: each one small, ``forward(req) -> req``, testable alone."""
