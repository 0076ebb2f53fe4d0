"""How the denoise loop feeds a family's DiT and reads its prediction back.

The loop owns branches, guidance, experts, batching and step hooks; everything a family's DiT
wants beyond diffusers' plain ``module(hidden_states=..., timestep=..., **kwargs)`` call lives in a
``DitAdapter`` subclass beside that family's condition stage (condition tokens or channels, a clean
first frame, per-token timesteps, a timestep scale or dtype).
"""

from __future__ import annotations

import torch

from sgld.request import Request


class DitAdapter:
    """The plain call: latents in the DiT's dtype as ``hidden_states``, the scheduler's timestep per sample.

    ``dtype`` is the DiT's (``ModelMixin.dtype``, as diffusers uses it: some modules stay fp32).
    """

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def model_input(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        """The DiT's ``hidden_states`` for this step's (batch of) latents."""
        return latents.to(self.dtype)

    def timestep(self, t: torch.Tensor, latents: torch.Tensor, batch: int, req: Request) -> torch.Tensor:
        """The DiT's ``timestep`` for ``batch`` stacked rows (both CFG branches count)."""
        return t.expand(batch)

    def call(self, module: torch.nn.Module, hidden_states: torch.Tensor, timestep: torch.Tensor,
             kwargs: dict) -> torch.Tensor:
        """One forward of ``module``: its first output."""
        return module(hidden_states=hidden_states, timestep=timestep, **kwargs, return_dict=False)[0]

    def prediction(self, out: torch.Tensor, latents: torch.Tensor, req: Request) -> torch.Tensor:
        """The part of the DiT's output the scheduler steps (shaped like ``latents``)."""
        return out

    def finish(self, latents: torch.Tensor, req: Request) -> torch.Tensor:
        """One sample's latents after its last step, as the decoder should see them."""
        return latents

