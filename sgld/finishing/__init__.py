"""Finishing of decoded frames: RIFE frame interpolation and Real-ESRGAN upscaling (apply.py)."""
