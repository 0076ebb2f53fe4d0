"""Stand-in: the real package imports every pipeline config (torch, model code)."""
