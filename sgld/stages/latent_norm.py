"""How a VAE's latents are scaled for the DiT: one normalisation used by every encode and decode stage."""

from __future__ import annotations

from typing import Optional, Union

import torch


class LatentNorm:
    """``normalize``: VAE latents -> the DiT's space; ``denormalize``: back, for the decoder.

    Wan and Qwen-Image VAEs give per-channel ``latents_mean``/``latents_std``; FLUX and
    HunyuanVideo VAEs one ``scaling_factor`` (and FLUX a ``shift_factor``). Both are
    (x - mean) * scale and x / scale + mean, the arithmetic the reference pipelines use.
    """

    def __init__(self, mean: Optional[Union[torch.Tensor, float]], std: Optional[torch.Tensor] = None,
                 scaling_factor: float = 1.0):
        self.mean, self.std, self.scaling_factor = mean, std, scaling_factor

    @classmethod
    def of(cls, vae) -> "LatentNorm":
        """The normalisation a VAE's config describes."""
        config = vae.config
        if config.get("latents_mean") is not None:
            channels = len(config.latents_mean)
            mean = torch.tensor(config.latents_mean).view(1, channels, 1, 1, 1)
            std = torch.tensor(config.latents_std).view(1, channels, 1, 1, 1)
            return cls(mean, std)
        return cls(config.get("shift_factor"), scaling_factor=config.scaling_factor)

    def _scale(self, x: torch.Tensor):
        # 1/std in x's dtype, as the references compute it (bit-equal decodes in bf16 too).
        return self.scaling_factor if self.std is None else 1.0 / self.std.to(x.device, x.dtype)

    def _mean(self, x: torch.Tensor):
        return self.mean.to(x.device, x.dtype) if isinstance(self.mean, torch.Tensor) else self.mean

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output -> the latents the DiT denoises."""
        if self.mean is not None:
            x = x - self._mean(x)
        return x * self._scale(x)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Denoised latents -> what the decoder expects."""
        x = x / self._scale(x)
        return x if self.mean is None else x + self._mean(x)
