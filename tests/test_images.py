"""Image datasets, ImageNet preprocessing, and the ``diva convert``/``features`` CLI.

Oracles: pixels the test wrote (PNG is lossless), crop offsets and
normalization computed in numpy, TFDS's own mock data, and the Python API for
the command line's output. Nothing is downloaded.
"""

import argparse

import numpy as np
import pytest
from PIL import Image

import diva_jax
from diva_jax import data, features
from diva_jax.cli import _features as cli_features
from diva_jax.features import IMAGENET_MEAN, IMAGENET_STD, imagenet_preprocess
from test_features_resnet import random_state_dict

tfds = pytest.importorskip("tensorflow_datasets")


def normalize(pixels_uint8):
    return (pixels_uint8 / np.float32(255) - np.float32(IMAGENET_MEAN)) / np.float32(
        IMAGENET_STD)


def test_center_crop_and_normalization_without_resizing():
    image = np.random.default_rng(0).integers(0, 256, (40, 61, 3), dtype=np.uint8)
    out = imagenet_preprocess(image, resize=40, crop=32)  # short side already 40
    top, left = round((40 - 32) / 2), round((61 - 32) / 2)
    np.testing.assert_allclose(out, normalize(image[top:top + 32, left:left + 32]),
                               rtol=0, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (32, 32, 3)


@pytest.mark.parametrize("shape,expected", [((30, 45), (30, 20)), ((45, 30), (20, 30)),
                                            ((20, 20), (20, 20))])
def test_short_side_resize_follows_torchvision(shape, expected):
    assert features._preprocess.resized_size(shape[1], shape[0], 20) == expected


def test_constant_images_of_any_mode_stay_constant():
    """Resizing preserves a constant image; gray and RGBA become RGB."""
    rgb = np.full((50, 70, 3), (10, 120, 250), np.uint8)
    gray = np.full((70, 50), 77, np.uint8)
    rgba = np.concatenate([rgb, np.zeros((50, 70, 1), np.uint8)], axis=-1)
    for image, pixel in [(rgb, (10, 120, 250)), (gray, (77, 77, 77)),
                         (gray[..., None], (77, 77, 77)), (rgba, (10, 120, 250)),
                         (Image.fromarray(rgb), (10, 120, 250))]:
        out = imagenet_preprocess(image, resize=24, crop=20)
        assert out.shape == (20, 20, 3)
        np.testing.assert_allclose(out, np.broadcast_to(
            normalize(np.asarray(pixel, np.float32)), out.shape), atol=1e-6)


def test_preprocessing_rejects_bad_input():
    with pytest.raises(ValueError, match="crop"):
        imagenet_preprocess(np.zeros((8, 8, 3), np.uint8), resize=8, crop=9)
    with pytest.raises(ValueError, match="uint8"):
        imagenet_preprocess(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        imagenet_preprocess(np.zeros((8, 8, 2), np.uint8))


def write_folder(root, classes=("cat", "dog"), per_class=3, seed=0):
    """PNG images of varied sizes, one subfolder per class; returns their pixels."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (20 + 3 * i, 26, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / c / f"img {i}.png")
            pixels[f"{c}/img {i}.png"] = image
    return pixels


def test_image_folder_reads_labels_ids_and_pixels(tmp_path):
    pixels = write_folder(tmp_path / "pets", classes=("dog", "cat", "ant"))
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    dataset = data.load_image_folder(tmp_path / "pets", resize=20, crop=16)
    assert len(dataset) == 9 and dataset.class_names == ("ant", "cat", "dog")
    np.testing.assert_array_equal(dataset.labels, np.repeat([0, 1, 2], 3))
    assert list(dataset.ids) == sorted(pixels)
    for i, image_id in enumerate(dataset.ids):
        np.testing.assert_array_equal(dataset.image(i), pixels[image_id])
    batch = dataset[2:5]
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], imagenet_preprocess(
        pixels[dataset.ids[3]], resize=20, crop=16))
    np.testing.assert_array_equal(dataset[-1], dataset[8:9][0])
    serial = data.load_image_folder(tmp_path / "pets", resize=20, crop=16,
                                    num_workers=1)
    np.testing.assert_array_equal(serial[:], dataset[:])


def test_split_files_and_image_lists(tmp_path):
    write_folder(tmp_path / "Images", classes=("bar", "airport"))
    (tmp_path / "Train.txt").write_text("bar/img 1.png\nairport/img 0.png\n")
    train = data.load_image_folder(tmp_path / "Images", split_file=tmp_path /
                                   "Train.txt", split="train")
    assert list(train.ids) == ["bar/img 1.png", "airport/img 0.png"]
    np.testing.assert_array_equal(train.labels, [1, 0])  # indices of all classes

    images = tmp_path / "images"
    images.mkdir()
    for name in ("1001", "1002", "1003"):
        Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(images / f"{name}.jpg")
    listing = tmp_path / "images_variant_test.txt"
    listing.write_text("1001 Boeing 707\n1002 A300\n1003 Boeing 707\n")
    test = data.load_image_list(listing, images, resize=8, crop=8)
    assert test.class_names == ("A300", "Boeing 707")
    np.testing.assert_array_equal(test.labels, [1, 0, 1])
    assert test[:].shape == (3, 8, 8, 3)


def test_image_loaders_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_image_folder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        data.load_image_folder(tmp_path / "flat")
    write_folder(tmp_path / "Images")
    (tmp_path / "Test.txt").write_text("cat/missing.png\n")
    with pytest.raises(FileNotFoundError, match="not under"):
        data.load_image_folder(tmp_path / "Images", split_file=tmp_path / "Test.txt")
    (tmp_path / "bad.txt").write_text("1001\n")
    with pytest.raises(ValueError, match="<image id> <class>"):
        data.load_image_list(tmp_path / "bad.txt", tmp_path)


@pytest.mark.parametrize("name", ["oxford_flowers102", "svhn_cropped"])
def test_tfds_loader_on_mock_data(name):
    with tfds.testing.mock_data(num_examples=5,
                                policy=tfds.testing.MockPolicy.USE_CODE):
        dataset = data.load_tfds(name, "train", resize=36, crop=32)
        batch = dataset[0:5]
        assert batch.shape == (5, 32, 32, 3) and len(dataset) == 5
        np.testing.assert_array_equal(batch[3], imagenet_preprocess(
            dataset.image(3), resize=36, crop=32))
        labels, ids = dataset.labels, dataset.ids
    assert dataset.num_classes == {"oxford_flowers102": 102, "svhn_cropped": 10}[name]
    assert labels.dtype == np.int64 and np.all((labels >= 0) & (labels < 102))
    assert ids.shape == (5,) and all(isinstance(i, str) for i in ids)


def test_tfds_dataset_not_on_disk_says_how_to_prepare_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build oxford_flowers102") as err:
        data.load_tfds("oxford_flowers102", data_dir=tmp_path)
    assert "--data-dir" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(ValueError, match="not a TFDS dataset name"):
        data.load_tfds("no_such_dataset_anywhere", data_dir=tmp_path)


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="diva")
    cli_features.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def tiny_state_dict(path):
    """Writes a random torchvision-style state_dict; returns its weight count."""
    state = random_state_dict(0, K=3)
    np.savez(path, **state)
    return sum(v.size for k, v in state.items() if k.endswith(("weight", "bias")))


def test_cli_convert_then_features_of_a_folder(tmp_path, capsys):
    num_weights = tiny_state_dict(tmp_path / "tiny.npz")
    assert run_cli(["convert", str(tmp_path / "tiny.npz"),
                    str(tmp_path / "tiny.msgpack")]) == 0
    assert f"{num_weights:,} parameters" in capsys.readouterr().out
    for split, seed in (("train", 1), ("test", 2)):
        write_folder(tmp_path / "imgs" / split, per_class=2, seed=seed)
    out = tmp_path / "feats.npz"
    argv = ["features", "--weights", str(tmp_path / "tiny.msgpack"),
            "--image-folder", str(tmp_path / "imgs"), "--split", "train,test",
            "--resize", "20", "--crop", "16", "--batch-size", "3", "-o", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert run_cli(argv) == 0

    emb = data.load_embeddings(out)
    assert emb["features"].shape == (8, 64)
    np.testing.assert_array_equal(emb["split"], [0] * 4 + [1] * 4)
    np.testing.assert_array_equal(emb["labels"], [0, 0, 1, 1] * 2)
    assert list(emb["split_names"]) == ["train", "test"]
    apply_fn, params = features.load_torchvision_resnet(tmp_path / "tiny.npz")
    test_images = data.load_image_folder(tmp_path / "imgs" / "test", resize=20,
                                         crop=16)
    np.testing.assert_allclose(emb["features"][4:], features.extract_features(
        apply_fn, params, test_images, progress=False), rtol=1e-5, atol=1e-6)
    grad = diva_jax.dataset_derivative(emb["features"], emb["labels"], 1.0)
    assert grad.shape == (8,) and np.all(np.isfinite(grad))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    assert run_cli(argv) == 0  # a rerun reuses the caches
    np.testing.assert_array_equal(data.load_embeddings(out)["features"],
                                  emb["features"])


def test_cli_features_from_tfds_mock_and_image_list(tmp_path):
    tiny_state_dict(tmp_path / "tiny.npz")
    out = tmp_path / "flowers.npz"
    with tfds.testing.mock_data(num_examples=3,
                                policy=tfds.testing.MockPolicy.USE_CODE):
        assert run_cli(["features", "--weights", str(tmp_path / "tiny.npz"),
                        "--tfds", "oxford_flowers102", "--split", "train,test",
                        "--data-dir", str(tmp_path), "--resize", "16", "--crop", "16",
                        "-o", str(out), "--no-progress"]) == 0
    emb = data.load_embeddings(out)
    assert emb["features"].shape == (6, 64) and len(emb["class_names"]) == 102
    np.testing.assert_array_equal(emb["split"], [0, 0, 0, 1, 1, 1])

    images = tmp_path / "images"
    images.mkdir()
    for name in ("11", "12"):
        Image.fromarray(np.full((9, 9, 3), 50, np.uint8)).save(images / f"{name}.jpg")
    (tmp_path / "trainval.txt").write_text("11 A300\n")
    (tmp_path / "test.txt").write_text("12 Boeing 707\n")
    assert run_cli(["features", "--weights", str(tmp_path / "tiny.npz"),
                    "--image-list", str(tmp_path / "trainval.txt"),
                    "--image-list", str(tmp_path / "test.txt"),
                    "--image-root", str(images), "--resize", "8", "--crop", "8",
                    "-o", str(out), "--no-progress"]) == 0
    emb = data.load_embeddings(out)
    np.testing.assert_array_equal(emb["labels"], [0, 1])
    assert list(emb["split_names"]) == ["trainval", "test"]


def test_cli_rejects_a_model_file_without_msgpack_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.msgpack"):
        run_cli(["convert", str(tmp_path / "a.npz"), str(tmp_path / "model.bin")])
