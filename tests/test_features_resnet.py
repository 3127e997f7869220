"""Flax ResNets and weight loading, checked against torchvision's own outputs.

Oracles: logits and penultimate features that torchvision computed for the same
weights and images (``shared/data/torchvision-resnet``), and torchvision's
published parameter counts for the ImageNet architectures.
"""

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diva_jax import features
from diva_jax.features import (ResNetApply, convert_state_dict, infer_resnet,
                               load_model, load_resnet, load_torchvision_resnet,
                               save_resnet)

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "data" / "torchvision-resnet"
NEEDS_REFERENCE = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"torchvision reference outputs absent: {REFERENCE}")

# Parameter counts that torchvision reports for its ImageNet models.
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672,
                      "resnet50": 25_557_032, "resnext50_32x4d": 25_028_904}
ARCHITECTURES = {"resnet18": ("basic", [2, 2, 2, 2], 64, 1),
                 "resnet34": ("basic", [3, 4, 6, 3], 64, 1),
                 "resnet50": ("bottleneck", [3, 4, 6, 3], 64, 1),
                 "resnext50_32x4d": ("bottleneck", [3, 4, 6, 3], 4, 32)}


def torchvision_state_shapes(block, layers, width_per_group, groups, K=1000,
                             base=64):
    """The ``state_dict`` shapes of ``torchvision.models.resnet.ResNet``.

    Written from torchvision's construction rules, independently of the
    converter: planes 64 * 2^(L-1), bottleneck width planes * wpg / 64 * groups,
    expansion 4, downsample on the first block of a stage when the shape changes.
    ``base`` replaces torchvision's 64 channels (for tiny test networks).
    """
    shapes = {"conv1.weight": (base, 3, 7, 7)}
    bn = lambda name, c: shapes.update({f"{name}.{leaf}": (c,) for leaf in (  # noqa
        "weight", "bias", "running_mean", "running_var")})
    bn("bn1", base)
    expansion = 1 if block == "basic" else 4
    inplanes = base
    for stage, num_blocks in enumerate(layers, start=1):
        planes = base * 2 ** (stage - 1)
        width = int(planes * width_per_group / 64) * groups
        for b in range(num_blocks):
            pre = f"layer{stage}.{b}."
            if block == "basic":
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            else:
                convs = [(width, inplanes, 1), (width, width // groups, 3),
                         (planes * 4, width, 1)]
            for j, (out, inp, size) in enumerate(convs, start=1):
                shapes[f"{pre}conv{j}.weight"] = (out, inp, size, size)
                bn(f"{pre}bn{j}", out)
            if b == 0 and (stage > 1 or inplanes != planes * expansion):
                shapes[f"{pre}downsample.0.weight"] = (planes * expansion, inplanes,
                                                       1, 1)
                bn(f"{pre}downsample.1", planes * expansion)
            inplanes = planes * expansion
    shapes["fc.weight"], shapes["fc.bias"] = (K, inplanes), (K,)
    return shapes


def random_state_dict(seed=0, K=10, layers=(1, 1, 1, 1), base=8):
    """A torchvision-style ``state_dict`` of a small basic-block ResNet, in numpy.

    He-scaled convolutions, BN scales and running variances in [0.5, 1.5],
    small biases and running means: activations stay of order one.
    """
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in torchvision_state_shapes("basic", layers, 64, 1, K=K,
                                               base=base).items():
        if len(shape) > 1:  # conv (O, I, H, W) or fc (out, in)
            value = rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))
        elif key.endswith(("running_var", "weight")):  # BN scales, variances
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = 0.1 * rng.standard_normal(shape)
        state[key] = value.astype(np.float32)
    return state


def random_tiny_resnet(seed=0, K=10, layers=(1, 1, 1, 1), base=8):
    """``(apply_fn, params)`` of :func:`random_state_dict`'s network.

    (Loading random weights avoids compiling Flax's random initializers, which
    takes about a minute on a small CPU.)
    """
    state = random_state_dict(seed, K, layers, base)
    model = infer_resnet(state)
    params, batch_stats = convert_state_dict(state, model)
    return ResNetApply(model, batch_stats), params


def reference(name):
    """(state_dict path, images NHWC, logits, penultimate) from torchvision."""
    ref = np.load(REFERENCE / f"{name}-reference.npz")
    images = ref["images_nchw"].transpose(0, 2, 3, 1)
    return REFERENCE / f"{name}-state-dict.npz", images, ref["logits"], ref[
        "penultimate"]


def as_float64(apply_fn, params):
    to64 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float64), tree)  # noqa
    return ResNetApply(apply_fn.model, to64(apply_fn.batch_stats)), to64(params)


@NEEDS_REFERENCE
@pytest.mark.parametrize("name", ["basic-1111", "bottleneck-1111-w16"])
def test_torchvision_conversion_reproduces_torch_outputs(name):
    path, images, logits_ref, features_ref = reference(name)
    apply_fn, params = load_torchvision_resnet(path)

    # float32, jitted: equal to float32 rounding of the torch computation.
    logits, penultimate = jax.jit(apply_fn)(params, jnp.asarray(images))
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, logits_ref, rtol=0,
                               atol=1e-5 * np.abs(logits_ref).max())
    np.testing.assert_allclose(penultimate, features_ref, rtol=0,
                               atol=1e-5 * np.abs(features_ref).max())

    # float64: the only difference left is torch's own float32 rounding.
    apply64, params64 = as_float64(apply_fn, params)
    logits64, features64 = jax.jit(apply64)(params64, images.astype(np.float64))
    np.testing.assert_allclose(logits64, logits_ref, rtol=0,
                               atol=2e-6 * np.abs(logits_ref).max())
    np.testing.assert_allclose(features64, features_ref, rtol=0,
                               atol=2e-6 * np.abs(features_ref).max())


@NEEDS_REFERENCE
def test_inferred_architectures_match_meta():
    import json
    meta = json.loads((REFERENCE / "meta.json").read_text())
    for name in ("basic-1111", "bottleneck-1111-w16"):
        apply_fn, params = load_torchvision_resnet(reference(name)[0])
        arch = apply_fn.model.metadata()
        assert arch["block"] == meta[name]["block"].replace("Block", "").lower()
        assert arch["stage_sizes"] == meta[name]["layers"]
        assert arch["num_classes"] == meta[name]["num_classes"]
        assert arch["width_per_group"] == meta[name].get("width_per_group", 64)
        assert sum(p.size for p in jax.tree.leaves(params)) == meta[name]["params"]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_imagenet_state_dicts_are_inferred_and_loaded(arch):
    block, layers, wpg, groups = ARCHITECTURES[arch]
    shapes = torchvision_state_shapes(block, layers, wpg, groups)
    state = {k: np.broadcast_to(np.float32(0.5), s) for k, s in shapes.items()}
    state["bn1.num_batches_tracked"] = np.array(7)  # buffers are ignored
    model = infer_resnet(state)
    assert (model.block, list(model.stage_sizes)) == (block, layers)
    assert (model.width_per_group, model.groups) == (wpg, groups)
    params, batch_stats = convert_state_dict(state, model)
    assert sum(p.size for p in jax.tree.leaves(params)) == TORCHVISION_PARAMS[arch]
    assert params["layer2_0"]["conv1"]["kernel"].shape[:2] == (
        shapes["layer2.0.conv1.weight"][2:])


def test_named_variants_have_torchvision_parameter_counts():
    for arch, make in [("resnet18", features.resnet18), ("resnet34", features.resnet34),
                       ("resnet50", features.resnet50)]:
        variables = jax.eval_shape(make().init, jax.random.key(0),
                                   jnp.zeros((1, 64, 64, 3)))
        count = sum(p.size for p in jax.tree.leaves(variables["params"]))
        assert count == TORCHVISION_PARAMS[arch]


def test_layout_conversion_of_a_random_state_dict_matches_einsum():
    """conv (OIHW -> HWIO) and fc ((out, in) -> (in, out)) on a tiny network."""
    model = features.resnet_tiny(num_classes=3)
    shapes = torchvision_state_shapes("basic", [1, 1, 1, 1], 64, 1, K=3, base=8)
    rng = np.random.default_rng(0)
    state = {k: rng.uniform(0.5, 1.5, s).astype(np.float32) for k, s in shapes.items()}
    assert infer_resnet(state).metadata() == model.metadata()
    params, stats = convert_state_dict(state, model)
    np.testing.assert_array_equal(params["conv1"]["kernel"][1, 2, 0, 5],
                                  state["conv1.weight"][5, 0, 1, 2])
    np.testing.assert_array_equal(params["fc"]["kernel"], state["fc.weight"].T)
    np.testing.assert_array_equal(stats["layer2_0"]["downsample_bn"]["var"],
                                  state["layer2.0.downsample.1.running_var"])


def test_msgpack_round_trip_and_dispatch(tmp_path):
    apply_fn, params = random_tiny_resnet(1)
    path = save_resnet(tmp_path / "tiny.msgpack", apply_fn, params)
    loaded_fn, loaded = load_resnet(path)
    assert loaded_fn.model.metadata() == apply_fn.model.metadata()
    jax.tree.map(np.testing.assert_array_equal, loaded, params)
    x = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype(np.float32)
    expected = jax.jit(apply_fn)(params, x)
    jax.tree.map(np.testing.assert_array_equal, jax.jit(loaded_fn)(loaded, x),
                 expected)
    via_dispatch = jax.jit(load_model(path)[0].logits)(loaded, x)
    np.testing.assert_array_equal(via_dispatch, expected[0])
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("dtype", [np.float64])
def test_jit_equals_eager_and_methods_select_outputs(dtype):
    apply_fn, params = random_tiny_resnet(3)
    if dtype == np.float64:
        apply_fn, params = as_float64(apply_fn, params)
    x = np.random.default_rng(4).standard_normal((2, 40, 24, 3)).astype(dtype)
    logits, penultimate = apply_fn(params, x)  # any image size works
    assert logits.shape == (2, 10) and penultimate.shape == (2, 64)
    assert logits.dtype == dtype and apply_fn.model.num_features == 64
    jitted = jax.jit(apply_fn)(params, x)
    tol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    for out, ref in zip(jitted, (logits, penultimate), strict=True):
        np.testing.assert_allclose(out, ref, rtol=0, atol=tol * np.abs(ref).max())
    np.testing.assert_array_equal(apply_fn.features(params, x), penultimate)
    np.testing.assert_array_equal(apply_fn.logits(params, x), logits)


def test_init_resnet_gives_loader_style_outputs():
    model = features.ResNet("basic", (1,), num_classes=3, width=4)
    apply_fn, params = features.init_resnet(model, jax.random.key(0, impl="rbg"),
                                            image_size=16)
    assert set(params) == {"conv1", "bn1", "layer1_0", "fc"}
    assert set(apply_fn.batch_stats) == {"bn1", "layer1_0"}
    logits, penultimate = jax.jit(apply_fn)(params, np.ones((2, 16, 16, 3)))
    assert logits.shape == (2, 3) and penultimate.shape == (2, 4)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_torchvision_resnet(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", **{"encoder.weight": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="not a torchvision ResNet"):
        load_torchvision_resnet(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="expected a .msgpack"):
        load_model(tmp_path / "weights.bin")
    (tmp_path / "bad.msgpack").write_bytes(b"\x81\xa1a\x01")
    with pytest.raises(ValueError, match="not a diva-jax model file"):
        load_resnet(tmp_path / "bad.msgpack")
    with pytest.raises(ValueError, match="block must be"):
        features.ResNet("dense", (1,))


@NEEDS_REFERENCE
def test_missing_and_misshapen_weights_are_named(tmp_path):
    state = dict(np.load(reference("basic-1111")[0]))
    model = infer_resnet(state)
    broken = dict(state)
    del broken["layer3.0.bn2.running_var"]
    with pytest.raises(ValueError, match=r"missing \['batch_stats.layer3_0.bn2.var'\]"):
        convert_state_dict(broken, model)
    broken = dict(state, **{"fc.bias": np.zeros(11, np.float32)})
    with pytest.raises(ValueError, match="shapes do not match"):
        convert_state_dict(broken, model)


def test_pth_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed
    path = tmp_path / "weights.pth"
    path.write_bytes(b"not readable without torch")
    with pytest.raises(ImportError, match="np.savez"):
        load_torchvision_resnet(path)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (optional)")
def test_pth_with_torch_equals_npz(tmp_path):
    import torch
    state = random_state_dict(0, K=3)
    wrapped = {f"module.{k}": torch.from_numpy(v) for k, v in state.items()}
    torch.save({"state_dict": wrapped, "epoch": 3}, tmp_path / "weights.pth")
    np.savez(tmp_path / "weights.npz", **state)
    from_pth = load_torchvision_resnet(tmp_path / "weights.pth")[1]
    from_npz = load_torchvision_resnet(tmp_path / "weights.npz")[1]
    jax.tree.map(np.testing.assert_array_equal, from_pth, from_npz)


def test_data_parallel_prefix_is_stripped(tmp_path):
    shapes = torchvision_state_shapes("basic", [1, 1, 1, 1], 64, 1, K=3, base=8)
    np.savez(tmp_path / "dp.npz", **{f"module.{k}": np.ones(s, np.float32)
                                     for k, s in shapes.items()})
    apply_fn, params = load_torchvision_resnet(tmp_path / "dp.npz")
    assert apply_fn.model.metadata() == features.resnet_tiny(3).metadata()
