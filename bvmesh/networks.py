"""The paper's networks: coarse-to-fine sub-networks built from convolution groups.

A convolution group is conv -> batch norm -> leaky ReLU (slope 0.25), as in the paper.
The initialisation network chains sub-networks at 32, 64 and 128 pixels, each taking
the slice at its scale and the previous scale's prediction; the propagation network
chains sub-networks at 64 and 128 that take slice z, its mask and slices z+1..z+4 and
predict the 4 next masks. Every output is a tensor of logits with one channel per class
plus background (softmax over them gives the per-class probability maps), and every
scale's output is returned because the loss applies at every scale.

Noise layers (Gaussian, salt-and-pepper) act only in training mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def select_device(spec: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else MPS, else CPU; or an explicit torch device string."""
    from .errors import BvmeshError

    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        device = None
    # torch also knows meta, xla, vulkan...: devices bvmesh cannot run on.
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise BvmeshError(f"--device {spec!r} is not a device; use auto, cpu, cuda[:N] or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BvmeshError(f"--device {spec}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BvmeshError(f"--device {spec}: there is only {torch.cuda.device_count()} CUDA "
                          f"device(s) here (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BvmeshError(f"--device {spec}: MPS is not available here; use --device cpu")
    return device


class ConvGroup(nn.Sequential):
    """conv 3x3 -> batch norm -> leaky ReLU(0.25): the paper's building block."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.25, inplace=True))


def for_inference(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` (in eval mode) made faster to run, in place: every convolution group's batch
    norm folded into its convolution (one pass fewer over each feature map), and on a
    CPU the weights in channels-last order, which oneDNN's small convolutions run about
    1.7 times faster (``benchmarks/bench_inference.py``). Outputs agree to float rounding (1e-5 on the
    logits). Not for training, nor for saving: the batch norms are gone."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if net.training:
        raise ValueError("for_inference needs a network in eval mode")
    for group in net.modules():
        if isinstance(group, ConvGroup) and isinstance(group[1], nn.BatchNorm2d):
            group[0] = fuse_conv_bn_eval(group[0], group[1])
            group[1] = nn.Identity()
    return net.to(memory_format=torch.channels_last) if device.type == "cpu" else net


class SubNet(nn.Module):
    """One scale: a small encoder-decoder (three resolutions) of convolution groups.

    ``width`` is the channel count at the sub-network's own resolution; it doubles at
    each of the two downscalings.
    """

    def __init__(self, cin: int, cout: int, width: int) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.enc1 = nn.Sequential(ConvGroup(cin, w1), ConvGroup(w1, w1))
        self.enc2 = nn.Sequential(ConvGroup(w1, w2), ConvGroup(w2, w2))
        self.enc3 = nn.Sequential(ConvGroup(w2, w3), ConvGroup(w3, w3))
        self.dec2 = ConvGroup(w3 + w2, w2)
        self.dec1 = ConvGroup(w2 + w1, w1)
        self.head = nn.Conv2d(w1, cout, 1)

    def forward(self, x: torch.Tensor, taps: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits; ``taps``, when given, gets the two deeper encoder maps (e2, e3)."""
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        if taps is not None:
            taps += [e2, e3]
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2.0), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], 1))
        return self.head(d1)


class NoiseLayer(nn.Module):
    """The paper's noise layer: Gaussian and salt-and-pepper noise, only in training.

    The paper's noise layers also rotate the input slices; the targets must rotate with
    them, so bvmesh does that rotation (with flips, scaling and elastic warps) in the
    training augmentation, where image and labels are transformed together.
    """

    def __init__(self, sigma: float = 0.05, salt_pepper: float = 0.01) -> None:
        super().__init__()
        self.sigma = sigma
        self.salt_pepper = salt_pepper

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return images
        strength = torch.rand(images.shape[0], 1, 1, 1, device=images.device)
        images = images + self.sigma * strength * torch.randn_like(images)
        u = torch.rand_like(images)
        amount = self.salt_pepper * strength
        images = torch.where(u < amount / 2, torch.zeros_like(images), images)
        return torch.where(u > 1 - amount / 2, torch.ones_like(images), images)


def _down(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def _up(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class InitNet(nn.Module):
    """Segments one slice, coarse to fine at 32, 64 and 128 pixels.

    Input (N, 1, 128, 128); output a list of logits (N, K+1, s, s) for s = 32, 64, 128.
    Each finer scale refines the upsampled coarser logits (a residual), so early in
    training the fine scales start from the coarse answer.
    """

    scales = (32, 64, 128)

    def __init__(self, n_classes: int, widths: tuple[int, int, int] = (16, 16, 16)) -> None:
        super().__init__()
        k = n_classes + 1
        self.subnets = nn.ModuleList(
            [SubNet(1, k, widths[0])] + [SubNet(1 + k, k, w) for w in widths[1:]])
        self.noise = NoiseLayer()

    def forward(self, image: torch.Tensor,
                taps: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Logits per scale; ``taps``, when given, gets each sub-network's deeper encoder
        maps (what bvmesh.base reads besides the logits)."""
        image = self.noise(image)
        outputs: list[torch.Tensor] = []
        for size, net in zip(self.scales, self.subnets):
            x = _down(image, size)
            if outputs:
                prev = _up(outputs[-1], size)
                outputs.append(prev + net(torch.cat([x, torch.softmax(prev, 1)], 1), taps))
            else:
                outputs.append(net(x, taps))
        return outputs


class PropNet(nn.Module):
    """Propagates a mask 4 slices at a time, coarse to fine at 64 and 128 pixels.

    Inputs: ``slices`` (N, 5, 128, 128) = slice z then z+1..z+4 in the direction of
    travel, ``mask`` (N, K+1, 128, 128) = class probabilities of slice z. Output: a list
    of logits (N, 4, K+1, s, s) for s = 64, 128.
    """

    scales = (64, 128)
    steps = 4

    def __init__(self, n_classes: int, widths: tuple[int, int] = (16, 16)) -> None:
        super().__init__()
        k = n_classes + 1
        self.k = k
        self.subnets = nn.ModuleList([
            SubNet(5 + k, self.steps * k, widths[0]),
            SubNet(5 + k + self.steps * k, self.steps * k, widths[1]),
        ])
        self.noise = NoiseLayer()

    def forward(self, slices: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        slices = self.noise(slices)
        n = slices.shape[0]
        outputs: list[torch.Tensor] = []
        for size, net in zip(self.scales, self.subnets):
            x = torch.cat([_down(slices, size), _down(mask, size)], 1)
            if outputs:
                prev = _up(outputs[-1].flatten(1, 2), size)
                probs = torch.softmax(prev.view(n, self.steps, self.k, size, size), 2)
                out = prev + net(torch.cat([x, probs.flatten(1, 2)], 1))
            else:
                out = net(x)
            outputs.append(out.view(n, self.steps, self.k, size, size))
        return outputs


class Locator(nn.Module):
    """Finds the heart on a whole, coarsely resampled slice: logits (N, 2, s, s) of heart vs rest."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = SubNet(1, 2, width)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)
