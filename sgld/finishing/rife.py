"""RIFE 4.22.lite (Huang et al., "Real-Time Intermediate Flow Estimation", ECCV 2022; Practical-RIFE's 4.22.lite
weights, MIT) written here from the published architecture: no maintained PyPI package ships 4.22.lite (ccvfi 0.0.3
ships only 4.26 heavy, behind OpenCV). Module names follow the released ``flownet.pkl`` so its weights load as they are.

IFNet estimates, coarse to fine over four scales (8, 4, 2, 1 times the given scale), the flows from the middle
frame to both inputs and a blending mask; the middle frame is the two inputs backward-warped along their flows
and blended by the mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` sampled at each pixel's position plus ``flow`` (pixels; x then y), bilinear, borders repeated."""
    n, _, h, w = flow.shape
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    # Pixels to the [-1, 1] grid of align_corners=True: one pixel is 2 / (size - 1).
    gx = grid_x + flow[:, 0] * (2.0 / max(w - 1, 1))
    gy = grid_y + flow[:, 1] * (2.0 / max(h - 1, 1))
    grid = torch.stack((gx, gy), dim=-1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, True))


class ResConv(nn.Module):
    """A 3x3 convolution with a learnt per-channel scale on a residual path."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One scale: from downsampled inputs (and the flow so far) to a flow update, a mask and features."""

    def __init__(self, in_planes: int, c: int):
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_planes, c // 2, 2), _conv(c // 2, c, 2))
        self.convblock = nn.Sequential(*[ResConv(c) for _ in range(8)])
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * 13, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float):
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat((x, flow), 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


class Head(nn.Module):
    """Per-frame features (4 channels at full resolution) the flow blocks see beside the pixels."""

    def __init__(self):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
        self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(16, 4, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


class IFNet(nn.Module):
    """RIFE 4.22.lite's flow network: four IFBlocks of widths 192, 128, 64, 32 over scales 8, 4, 2, 1."""

    def __init__(self):
        super().__init__()
        self.block0 = IFBlock(7 + 8, c=192)
        self.block1 = IFBlock(8 + 4 + 8 + 8, c=128)
        self.block2 = IFBlock(8 + 4 + 8 + 8, c=64)
        self.block3 = IFBlock(8 + 4 + 8 + 8, c=32)
        self.encode = Head()

    def flows(self, img0: torch.Tensor, img1: torch.Tensor, timestep: float = 0.5, scale: float = 1.0):
        """(flow to img0 and to img1, 4 channels; blending logits) for the frame at ``timestep``."""
        t = img0.new_full((img0.shape[0], 1, img0.shape[2], img0.shape[3]), timestep)
        f0, f1 = self.encode(img0), self.encode(img1)
        flow = mask = feat = None
        warped0, warped1 = img0, img1
        for block, level in zip((self.block0, self.block1, self.block2, self.block3), (8, 4, 2, 1)):
            if flow is None:
                flow, mask, feat = block(torch.cat((img0, img1, f0, f1, t), 1), None, level / scale)
            else:
                wf0, wf1 = backward_warp(f0, flow[:, :2]), backward_warp(f1, flow[:, 2:4])
                delta, mask, feat = block(torch.cat((warped0, warped1, wf0, wf1, t, mask, feat), 1), flow, level / scale)
                flow = flow + delta
            warped0, warped1 = backward_warp(img0, flow[:, :2]), backward_warp(img1, flow[:, 2:4])
        return flow, mask

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, timestep: float = 0.5, scale: float = 1.0) -> torch.Tensor:
        flow, mask = self.flows(img0, img1, timestep, scale)
        return blend(img0, img1, flow, mask)


def blend(img0: torch.Tensor, img1: torch.Tensor, flow: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """The middle frame: both inputs warped along their flows, mixed by the sigmoid of the mask."""
    mask = torch.sigmoid(mask_logits)
    return backward_warp(img0, flow[:, :2]) * mask + backward_warp(img1, flow[:, 2:4]) * (1 - mask)


def load_ifnet(state: dict) -> IFNet:
    """An IFNet holding a RIFE 4.22.lite state dict (DataParallel's ``module.`` prefix dropped); every key must fit."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    net = IFNet()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"not RIFE 4.22.lite weights: missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
    return net.eval()


@torch.no_grad()
def interpolate_pairs(net: IFNet, frames: torch.Tensor, exp: int, scale: float = 1.0, batch: int = 8) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> ((N - 1) * 2**exp + 1, 3, H, W): 2**exp - 1 frames between each pair, by halving."""
    h, w = frames.shape[-2:]
    unit = max(32, int(32 / scale))  # the coarsest block divides by 32 / scale: pad to a multiple of it
    ph, pw = -(-h // unit) * unit, -(-w // unit) * unit
    padded = F.pad(frames, (0, pw - w, 0, ph - h))
    for _ in range(exp):
        pairs = padded.shape[0] - 1
        mids = torch.cat([net(padded[i:min(i + batch, pairs)], padded[i + 1:min(i + batch, pairs) + 1], 0.5, scale)
                          for i in range(0, pairs, batch)])
        both = torch.empty((padded.shape[0] * 2 - 1, *padded.shape[1:]), dtype=padded.dtype, device=padded.device)
        both[0::2], both[1::2] = padded, mids
        padded = both
    return padded[..., :h, :w]
