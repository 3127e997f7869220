"""Reading torchvision ResNet ``state_dict`` files into the Flax :class:`ResNet`.

A ``state_dict`` names every tensor (``layer2.0.downsample.1.running_var``),
and its keys and shapes alone determine the architecture: the block type (a
``conv3`` means bottlenecks), the blocks per stage, the stem width, the number
of classes, and for bottlenecks ``width_per_group`` and ``groups`` from the
inner convolutions. Layouts differ: torch convolutions are OIHW and Flax's
HWIO, and torch's ``Linear`` stores (out, in) where ``nn.Dense`` wants
(in, out).

``.pth``/``.pt`` files need torch (imported only for them); an ``.npz`` with the
same keys needs nothing but numpy::

    np.savez("resnet34.npz", **{k: v.numpy() for k, v in sd.items()})
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from diva_jax.features._resnet import ResNet, ResNetApply

_PREFIXES = ("module.", "model.", "backbone.")
_LEAVES = {"weight", "bias", "running_mean", "running_var"}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a torchvision ``state_dict`` from ``.pth``/``.pt`` or ``.npz``.

    Wrapped checkpoints (``{"state_dict": ...}`` or ``{"model": ...}``) and the
    ``module.`` prefix of ``DataParallel`` are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist.")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            state = {k: f[k] for k in f.files}
    elif path.suffix in (".pth", ".pt"):
        state = _read_torch(path)
    else:
        raise ValueError(f"{path}: expected a .pth, .pt or .npz state_dict file.")
    return _strip_prefixes(state)


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"reading {path.name} needs torch, which is not installed. Either "
            "`pip install torch`, or convert it where torch is installed: "
            "np.savez('weights.npz', **{k: v.numpy() for k, v in "
            "torch.load(path).items()}) and pass the .npz.") from err
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return {k: v.detach().cpu().numpy() for k, v in state.items()
            if hasattr(v, "detach")}


def _strip_prefixes(state: dict) -> dict[str, np.ndarray]:
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def infer_resnet(state: dict[str, np.ndarray], *, dtype=None) -> ResNet:
    """The :class:`ResNet` whose parameters have the keys and shapes of ``state``."""
    _require(state, ["conv1.weight", "fc.weight", "layer1.0.conv1.weight"])
    stage_sizes = []
    for stage in range(1, 10):
        blocks = {int(m.group(1)) for k in state
                  if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        if not blocks:
            break
        stage_sizes.append(max(blocks) + 1)
    width = state["conv1.weight"].shape[0]
    num_classes = state["fc.weight"].shape[0]
    if "layer1.0.conv3.weight" not in state:
        return ResNet("basic", tuple(stage_sizes), num_classes, width, dtype=dtype)

    inner = state["layer1.0.conv2.weight"].shape[0]
    groups = inner // state["layer1.0.conv2.weight"].shape[1]
    width_per_group = inner // groups * 64 // width
    return ResNet("bottleneck", tuple(stage_sizes), num_classes, width,
                  width_per_group, groups, dtype=dtype)


def _require(state: dict, keys: list[str]) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"not a torchvision ResNet state_dict: missing {missing}; "
                         f"first keys found: {sorted(state)[:5]}.")


def _flax_path(torch_key: str) -> tuple[str, tuple[str, ...]] | None:
    """``'layer1.0.downsample.1.running_var'`` -> ``('batch_stats', (..., 'var'))``."""
    module, _, leaf = torch_key.rpartition(".")
    if leaf not in _LEAVES:
        return None  # num_batches_tracked and other buffers
    module = re.sub(r"^layer(\d+)\.(\d+)", r"layer\1_\2", module)
    module = module.replace("downsample.0", "downsample_conv")
    module = module.replace("downsample.1", "downsample_bn")
    names = tuple(module.split("."))
    if leaf == "running_mean":
        return "batch_stats", names + ("mean",)
    if leaf == "running_var":
        return "batch_stats", names + ("var",)
    is_bn = names[-1].startswith(("bn", "downsample_bn"))
    kind = {"weight": "scale" if is_bn else "kernel", "bias": "bias"}[leaf]
    return "params", names + (kind,)


def _to_flax_layout(value: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if leaf == "kernel" and value.ndim == 2:
        return value.T  # Linear (out, in) -> Dense (in, out)
    return value


def convert_state_dict(state: dict[str, np.ndarray], model: ResNet
                       ) -> tuple[dict, dict]:
    """Maps a ``state_dict`` onto ``model``: returns ``(params, batch_stats)``.

    Every parameter and statistic of ``model`` must be present with the right
    shape, and no weight of ``state`` may be left over.
    """
    expected = jax.eval_shape(model.init, jax.random.key(0),
                              jnp.zeros((1, 64, 64, 3), jnp.float32))
    flat_expected = {(c,) + tuple(k.key for k in path): leaf.shape
                     for c in expected for path, leaf in
                     jax.tree_util.tree_flatten_with_path(expected[c])[0]}
    flat = {}
    for key, value in state.items():
        target = _flax_path(key)
        if target is not None:
            path = (target[0],) + target[1]
            flat[path] = _to_flax_layout(np.asarray(value, np.float32), path[-1])
    _check_same_tree(flat, flat_expected)
    tree = {"params": {}, "batch_stats": {}}
    for path, value in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = jnp.asarray(value)
    return tree["params"], tree["batch_stats"]


def _check_same_tree(flat: dict, expected: dict) -> None:
    missing = sorted(".".join(p) for p in set(expected) - set(flat))
    extra = sorted(".".join(p) for p in set(flat) - set(expected))
    if missing or extra:
        raise ValueError(f"state_dict does not match the inferred ResNet: missing "
                         f"{missing[:5]}, unexpected {extra[:5]}.")
    wrong = [(".".join(p), flat[p].shape, expected[p]) for p in expected
             if flat[p].shape != tuple(expected[p])]
    if wrong:
        raise ValueError(f"state_dict shapes do not match the inferred ResNet "
                         f"(name, got, expected): {wrong[:5]}.")


def load_torchvision_resnet(path: str | os.PathLike, *, dtype=None
                            ) -> tuple[ResNetApply, dict]:
    """Loads a torchvision ResNet ``state_dict`` as a Flax model.

    Args:
      path: a ``.pth``/``.pt`` file (needs torch) or an ``.npz`` of the same keys.
      dtype: optional computation dtype (e.g. ``jnp.bfloat16``).

    Returns:
      ``(apply_fn, params)``: ``apply_fn(params, images (n, h, w, 3))`` returns
      ``(logits (n, K), penultimate (n, d))`` with BatchNorm in eval mode;
      ``params`` are the trainable weights (the running statistics are bound
      inside ``apply_fn``). Images are NHWC, preprocessed as in
      :func:`imagenet_preprocess`.
    """
    state = read_state_dict(path)
    model = infer_resnet(state, dtype=dtype)
    params, batch_stats = convert_state_dict(state, model)
    return ResNetApply(model, batch_stats), params
