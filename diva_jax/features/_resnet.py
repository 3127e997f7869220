"""Flax ResNets in NHWC with torchvision's layout, returning logits and features.

The architectures are those of He et al. (2016) as torchvision builds them
("ResNet v1.5"): a 7x7 stride-2 stem convolution padded by 3, a 3x3 stride-2
max-pool padded by 1, four stages of basic or bottleneck blocks whose stride
sits on the 3x3 convolution, a 1x1 convolution with batch norm on the shortcut
when the shape changes, global average pooling and a dense head. Explicit
paddings reproduce torch's arithmetic exactly on every input size.

Submodules carry torchvision's names (``conv1``, ``bn1``, ``layer2_0`` for
``layer2.0``, ``downsample_conv`` for ``downsample.0``, ``fc``), so a
``state_dict`` maps onto the parameter tree key by key.

The penultimate features (after pooling, before ``fc``) are the last-layer
linearization that DIVA uses (paper sec. 3.1): ``z_i`` in ``f(x_i) = W^T z_i``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

BLOCKS = ("basic", "bottleneck")
_BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default


def _conv(features: int, size: int, stride: int, name: str, groups: int = 1):
    pad = (size - 1) // 2  # torch pads 3x3 by 1, 7x7 by 3, 1x1 by 0
    return nn.Conv(features, (size, size), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), use_bias=False,
                   feature_group_count=groups, name=name)


def _bn(name: str):
    return nn.BatchNorm(use_running_average=True, momentum=0.9,
                        epsilon=_BN_EPSILON, name=name)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; ``planes`` output channels."""

    planes: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        y = nn.relu(_bn("bn1")(_conv(self.planes, 3, self.stride, "conv1")(x)))
        y = _bn("bn2")(_conv(self.planes, 3, 1, "conv2")(y))
        return nn.relu(y + _shortcut(x, self.planes, self.stride))


class Bottleneck(nn.Module):
    """1x1 down to ``width``, 3x3 with the stride, 1x1 up to ``4 * planes``."""

    planes: int
    stride: int
    width: int
    groups: int = 1

    @nn.compact
    def __call__(self, x):
        y = nn.relu(_bn("bn1")(_conv(self.width, 1, 1, "conv1")(x)))
        y = _conv(self.width, 3, self.stride, "conv2", self.groups)(y)
        y = nn.relu(_bn("bn2")(y))
        y = _bn("bn3")(_conv(4 * self.planes, 1, 1, "conv3")(y))
        return nn.relu(y + _shortcut(x, 4 * self.planes, self.stride))


def _shortcut(x, channels: int, stride: int):
    """Identity, or torchvision's ``downsample`` (1x1 conv + BN) on a shape change."""
    if stride == 1 and x.shape[-1] == channels:
        return x
    x = _conv(channels, 1, stride, "downsample_conv")(x)
    return _bn("downsample_bn")(x)


class ResNet(nn.Module):
    """A torchvision-compatible ResNet on NHWC images.

    Attributes:
      block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50 and up).
      stage_sizes: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-34.
      num_classes: K, the number of logits.
      width: channels of the stem and of the first stage (64 in torchvision).
      width_per_group: torchvision's ``width_per_group`` (64; 128 for wide nets).
      groups: grouped 3x3 convolutions in bottlenecks (ResNeXt); 1 otherwise.
      dtype: computation dtype (parameters stay float32), e.g. bfloat16 on GPU.
    """

    block: str
    stage_sizes: tuple[int, ...]
    num_classes: int = 1000
    width: int = 64
    width_per_group: int = 64
    groups: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Float[Array, "n h w 3"]
                 ) -> tuple[Float[Array, "n K"], Float[Array, "n d"]]:
        """Returns ``(logits (n, K), penultimate features (n, d))``."""
        if self.dtype is not None:
            x = x.astype(self.dtype)
        x = nn.relu(_bn("bn1")(_conv(self.width, 7, 2, "conv1")(x)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, num_blocks in enumerate(self.stage_sizes):
            for b in range(num_blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                x = self._block(stage, stride, f"layer{stage + 1}_{b}")(x)
        features = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, name="fc")(features)
        return logits, features

    def _block(self, stage: int, stride: int, name: str) -> nn.Module:
        planes = self.width * 2**stage
        if self.block == "basic":
            return BasicBlock(planes, stride, name=name)
        inner = int(planes * self.width_per_group / 64) * self.groups
        return Bottleneck(planes, stride, inner, self.groups, name=name)

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}.")
        if self.block == "basic" and (self.width_per_group != 64 or self.groups != 1):
            raise ValueError("basic blocks support only width_per_group=64 and "
                             f"groups=1; got {self.width_per_group}, {self.groups}.")
        super().__post_init__()

    @property
    def num_features(self) -> int:
        """d, the size of the penultimate features."""
        expansion = 1 if self.block == "basic" else 4
        return self.width * 2 ** (len(self.stage_sizes) - 1) * expansion

    def metadata(self) -> dict:
        """The architecture as a JSON-able dict (``ResNet(**metadata)`` rebuilds it)."""
        fields = ("block", "stage_sizes", "num_classes", "width",
                  "width_per_group", "groups")
        meta = {f: getattr(self, f) for f in fields}
        meta["stage_sizes"] = list(meta["stage_sizes"])
        return meta


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-18 (11.7M parameters with K=1000)."""
    return ResNet("basic", (2, 2, 2, 2), num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-34 (21.8M parameters with K=1000), the paper's backbone."""
    return ResNet("basic", (3, 4, 6, 3), num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50 (25.6M parameters with K=1000)."""
    return ResNet("bottleneck", (3, 4, 6, 3), num_classes, **kwargs)


def resnet_tiny(num_classes: int = 10, **kwargs) -> ResNet:
    """A 4-block, 8-channel ResNet for tests (79k parameters with K=10)."""
    return ResNet("basic", (1, 1, 1, 1), num_classes, width=8, **kwargs)


def split_variables(variables) -> tuple[dict, dict]:
    """Splits Flax variables into ``(params, batch_stats)``."""
    variables = dict(variables)
    unknown = set(variables) - {"params", "batch_stats"}
    if unknown or "params" not in variables:
        raise ValueError("variables must hold 'params' and optionally "
                         f"'batch_stats'; got collections {sorted(variables)}.")
    return variables["params"], variables.get("batch_stats", {})


@dataclasses.dataclass(frozen=True, eq=False)
class ResNetApply:
    """``apply_fn(params, images) -> (logits, penultimate)`` in eval mode.

    The BatchNorm running statistics are constants of the linearization (they are
    not weights ``w``), so they are bound here and ``params`` holds only the
    trainable weights: ``jax.grad``/``jax.jvp`` of ``apply_fn`` in ``params``
    give exactly the network's Jacobian. They are small (two vectors per
    normalized layer), so binding them as constants costs nothing under
    ``jax.jit``.
    """

    model: ResNet
    batch_stats: dict

    def __call__(self, params, images: Float[Array, "n h w 3"]
                 ) -> tuple[Float[Array, "n K"], Float[Array, "n d"]]:
        variables = {"params": params, "batch_stats": self.batch_stats}
        return self.model.apply(variables, images)

    def logits(self, params, images: Float[Array, "n h w 3"]) -> Float[Array, "n K"]:
        """The K outputs ``f_w(x)`` alone (the function to linearize)."""
        return self(params, images)[0]

    def features(self, params, images: Float[Array, "n h w 3"]
                 ) -> Float[Array, "n d"]:
        """The penultimate features ``z`` alone (the last-layer linearization)."""
        return self(params, images)[1]


def init_resnet(model: ResNet, key: jax.Array, image_size: int = 224
                ) -> tuple[ResNetApply, dict]:
    """Random weights: returns ``(apply_fn, params)`` like the loaders do."""
    dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    params, batch_stats = split_variables(jax.jit(model.init)(key, dummy))
    return ResNetApply(model, batch_stats), params


def resnet_from_metadata(meta: dict) -> ResNet:
    """Rebuilds a :class:`ResNet` from :meth:`ResNet.metadata` (checked)."""
    fields = {f.name for f in dataclasses.fields(ResNet)} - {"parent", "name"}
    unknown = set(meta) - fields
    if unknown:
        raise ValueError(f"unknown ResNet metadata keys {sorted(unknown)}; "
                         f"expected a subset of {sorted(fields)}.")
    meta = dict(meta)
    meta["stage_sizes"] = tuple(int(s) for s in meta["stage_sizes"])
    return ResNet(**meta)
