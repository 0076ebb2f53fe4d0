"""Stand-in: the content type the realtime-video checks name (no sgld family streams video)."""

RAW_RGB_CONTENT_TYPE = "application/x-raw-rgb"
