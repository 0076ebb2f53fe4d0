"""Real-ESRGAN's two networks (Wang et al. 2021; xinntao/Real-ESRGAN, BSD-3): RRDBNet (RealESRGAN_x4plus, x2plus and
the ai-forever x2/x4/x8 weights) and SRVGGNetCompact (realesr-general-x4v3, realesr-animevideov3), written here and
told apart by their state dicts' keys. spandrel (which reads these and many more) is not used: its package imports
torchvision for two other architectures, and PyPI's torchvision does not load beside the CPU torch this project runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions, the output scaled by 0.2 onto the input."""

    def __init__(self, feat: int, grow: int):
        super().__init__()
        self.conv1 = nn.Conv2d(feat, grow, 3, 1, 1)
        self.conv2 = nn.Conv2d(feat + grow, grow, 3, 1, 1)
        self.conv3 = nn.Conv2d(feat + 2 * grow, grow, 3, 1, 1)
        self.conv4 = nn.Conv2d(feat + 3 * grow, grow, 3, 1, 1)
        self.conv5 = nn.Conv2d(feat + 4 * grow, feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            outs.append(self.lrelu(conv(torch.cat(outs, 1))))
        return self.conv5(torch.cat(outs, 1)) * 0.2 + x


class RestackedDenseBlock(nn.Module):
    """A ``ResidualDenseBlock`` with its five convolutions regrouped by input piece instead of by output: a convolution
    of each new piece (the block input, then each activated ``grow``-channel output) computes that piece's share of
    every later convolution at once, added into running sums. The same multiply-adds in wider convolutions (64 to 192
    output channels instead of 32) and no concatenated copies: on an H100, Real-ESRGAN x4 on a Wan 480p clip took
    8.79 s eager against 9.53 s, 4.70 s compiled against 6.04 s (``bench/upscaler.py``)."""

    def __init__(self, block: ResidualDenseBlock):
        super().__init__()
        convs = [block.conv1, block.conv2, block.conv3, block.conv4, block.conv5]
        feat, grow = block.conv1.in_channels, block.conv1.out_channels
        starts = [0] + [feat + grow * i for i in range(4)]  # where each piece sits in a convolution's input
        self.grow = grow
        self.stacks = nn.ParameterList()
        for piece in range(5):  # piece 0: the block input; piece i: conv i's activated output
            width = feat if piece == 0 else grow
            lo = starts[piece]
            self.stacks.append(nn.Parameter(torch.cat([conv.weight[:, lo:lo + width] for conv in convs[piece:]]),
                                            requires_grad=False))
        self.bias = nn.Parameter(torch.cat([conv.bias for conv in convs]), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sums = F.conv2d(x, self.stacks[0], self.bias, padding=1)  # every conv's share of x, plus the biases
        for piece in range(1, 5):
            out = F.leaky_relu(sums[:, :self.grow], 0.2)
            sums = sums[:, self.grow:] + F.conv2d(out, self.stacks[piece], padding=1)
        return sums * 0.2 + x


class RRDB(nn.Module):
    """Three residual dense blocks, scaled by 0.2 onto the input."""

    def __init__(self, feat: int, grow: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (ResidualDenseBlock(feat, grow) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator; the x2 (x1) variants see the input pixel-unshuffled by 2 (4) and upsample 4x after."""

    def __init__(self, scale: int, feat: int = 64, blocks: int = 23, grow: int = 32):
        super().__init__()
        self.scale = scale
        self.conv_first = nn.Conv2d(3 * {4: 1, 2: 4, 1: 16}[scale], feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(feat, grow) for _ in range(blocks)])
        self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 4:
            x = F.pixel_unshuffle(x, 4 // self.scale)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = self.lrelu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


class SRVGGNetCompact(nn.Module):
    """A plain stack of 3x3 convolutions with PReLU, pixel-shuffled up, plus the nearest-upsampled input."""

    def __init__(self, scale: int, feat: int = 64, convs: int = 16):
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, feat, 3, 1, 1), nn.PReLU(feat)]
        for _ in range(convs):
            layers += [nn.Conv2d(feat, feat, 3, 1, 1), nn.PReLU(feat)]
        layers.append(nn.Conv2d(feat, 3 * scale * scale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def build_upscaler(state: dict) -> nn.Module:
    """The network a Real-ESRGAN state dict holds (its ``params_ema`` / ``params`` entry when wrapped), loaded strictly."""
    for wrapper in ("params_ema", "params"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if "conv_first.weight" in state:
        scale = {3: 4, 12: 2, 48: 1}.get(state["conv_first.weight"].shape[1])
        if scale is None:
            raise ValueError(f"RRDBNet with {state['conv_first.weight'].shape[1]} input channels: not a Real-ESRGAN model")
        blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
        net: nn.Module = RRDBNet(scale, state["conv_first.weight"].shape[0], blocks, state["body.0.rdb1.conv1.weight"].shape[0])
    elif "body.0.weight" in state:
        convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("body.") and state[k].dim() == 4)
        scale = math.isqrt(state[f"body.{convs[-1]}.weight"].shape[0] // 3)
        net = SRVGGNetCompact(scale, state["body.0.weight"].shape[0], len(convs) - 2)
    else:
        raise ValueError(f"not a Real-ESRGAN state dict (keys like {sorted(state)[:3]}); RRDBNet or SRVGGNetCompact "
                         "weights in BasicSR's layout are taken")
    net.load_state_dict(state, strict=True)
    return net.eval()


def restack(net: nn.Module) -> nn.Module:
    """``net`` with an RRDBNet's dense blocks replaced, in place, by ``RestackedDenseBlock``s (the same function);
    any other network as it is."""
    if isinstance(net, RRDBNet):
        for rrdb in net.body:
            rrdb.rdb1, rrdb.rdb2, rrdb.rdb3 = (RestackedDenseBlock(b) for b in (rrdb.rdb1, rrdb.rdb2, rrdb.rdb3))
    return net


def prepare(net: nn.Module, device: torch.device, compile: bool = False) -> nn.Module:
    """A loaded upscaler made ready to run on ``device``, as the request path runs it: dense blocks restacked, then
    on a GPU in half precision and channels-last (Real-ESRGAN's own default, ``RealESRGANer(half=True)``: fp32 took
    20 s to upscale a Wan 480p clip x4 on an H100), then, for a run that compiles, its repeated blocks compiled."""
    net = restack(net)
    if device.type == "cuda":
        net = net.to(device, torch.float16, memory_format=torch.channels_last)
    else:
        net = net.to(device)
    return compile_upscaler(net) if compile else net


def compile_upscaler(net: nn.Module) -> nn.Module:
    """``net`` with its repeated part ``torch.compile``d in place (Inductor fuses the LeakyReLUs, running sums and
    scaled residual adds around the convolutions): each RRDB block of an RRDBNet, which share one graph (compiling
    the whole network took 119 s on an H100 for 23 copies of one block, ``bench/upscaler.py``), or a whole
    SRVGGNetCompact (a short plain stack). Static shapes: each frame size compiles once (a clip's last batch is
    padded to the batch length, ``upscale(pad_tail=True)``); torch's recompile limit, 8 a graph, then falls back to
    eager with a warning."""
    if isinstance(net, RRDBNet):
        for block in net.body:
            block.compile(dynamic=False)
    else:
        net.compile(dynamic=False)
    return net


BATCH = 4  # frames a network call


def is_compiled(net: nn.Module) -> bool:
    """Whether any part of ``net`` runs compiled (``compile_upscaler``)."""
    return any(getattr(module, "_compiled_call_impl", None) is not None for module in net.modules())


@torch.no_grad()
def upscale(net: nn.Module, frames: torch.Tensor, outscale: int, batch: int = BATCH,
            pad_tail: bool = False) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, H * outscale, W * outscale), float32: the network's own factor, then
    bicubic to ``outscale`` where it differs (Real-ESRGAN's --outscale). The network runs in its own dtype and
    memory format (half precision, channels-last on a GPU). ``pad_tail``: a last batch shorter than ``batch`` is
    filled with copies of its last frame, whose outputs are dropped, so a compiled network meets one batch length
    (a clip's tail would otherwise compile a graph of its own, and count towards torch's recompile limit)."""
    weight = next(net.parameters())
    layout = torch.channels_last if weight.is_cuda else torch.contiguous_format
    parts = []
    for i in range(0, frames.shape[0], batch):
        part = frames[i:i + batch]
        kept = part.shape[0]
        if pad_tail and kept < batch:
            part = torch.cat([part, part[-1:].expand(batch - kept, *part.shape[1:])])
        parts.append(net(part.to(weight.dtype, memory_format=layout))[:kept].float())
    out = torch.cat(parts)
    h, w = frames.shape[-2:]
    if out.shape[-2:] != (h * outscale, w * outscale):
        out = F.interpolate(out, size=(h * outscale, w * outscale), mode="bicubic", align_corners=False)
    return out.clamp(0, 1)
