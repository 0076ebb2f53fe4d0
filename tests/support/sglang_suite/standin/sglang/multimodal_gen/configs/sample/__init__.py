"""Stand-in: the real package imports every model's sampling parameters (torch)."""
