"""``diva convert`` and ``diva features``: from pretrained weights to ``Z``.

``diva convert`` turns a torchvision ResNet ``state_dict`` into the library's
model file; ``diva features`` runs a model over an image dataset (TFDS, a
folder of class subfolders, or FGVC-Aircraft-style lists) and writes the
penultimate features as an embedding file that every other command reads.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from diva_jax import data, features
from diva_jax.features._checkpoint import SUFFIX as MODEL_SUFFIX

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Adds the ``convert`` and ``features`` subcommands."""
    _register_convert(subparsers)
    _register_features(subparsers)


def _register_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="torchvision ResNet weights -> diva-jax model file",
        description="Reads a torchvision ResNet state_dict (.pth/.pt needs torch; "
        ".npz of the same keys does not), infers the architecture from its keys "
        "and shapes, and writes a .msgpack model file for `diva features`.")
    parser.add_argument("weights", help="torchvision state_dict (.pth, .pt, .npz)")
    parser.add_argument("output", help="model file to write (.msgpack)")
    parser.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    if Path(args.output).suffix != MODEL_SUFFIX:
        raise ValueError(f"output must end in {MODEL_SUFFIX}, got {args.output!r}.")
    apply_fn, params = features.load_torchvision_resnet(args.weights)
    features.save_resnet(args.output, apply_fn, params)
    num_params = sum(int(np.size(p)) for p in jax.tree.leaves(params))
    meta = apply_fn.model.metadata()
    print(f"wrote {args.output}: {meta['block']} ResNet {meta['stage_sizes']}, "
          f"{num_params:,} parameters, K={meta['num_classes']}, "
          f"d={apply_fn.model.num_features}")
    return 0


def _register_features(subparsers) -> None:
    parser = subparsers.add_parser(
        "features", help="penultimate features of an image dataset",
        description="Runs a pretrained ResNet over an image dataset and writes "
        "an embedding file (.npz: features, labels, ids, split, class_names). "
        "Images get the standard ImageNet preprocessing.")
    parser.add_argument("--weights", required=True, metavar="FILE",
                        help="model file from `diva convert` (.msgpack), or a "
                        "torchvision state_dict (.pth, .pt, .npz)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tfds", metavar="NAME",
                        help="TFDS dataset, read from --data-dir (never downloaded)")
    source.add_argument("--image-folder", metavar="DIR",
                        help="folder with one subfolder of images per class")
    source.add_argument("--image-list", metavar="FILE", action="append",
                        help="'<image id> <class>' list (FGVC-Aircraft), one per "
                        "split; repeat for several; needs --image-root")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="TFDS data_dir holding the prepared dataset")
    parser.add_argument("--split", default=None,
                        help="comma-separated splits, the first becomes split 0 "
                        "(train): TFDS splits, or subfolders of --image-folder "
                        "(default: TFDS 'train'; the whole folder)")
    parser.add_argument("--split-file", metavar="FILE", action="append",
                        help="with --image-folder: list of class/file paths, one "
                        "per split (MIT Indoor-67's TrainImages.txt); repeatable")
    parser.add_argument("--image-root", metavar="DIR",
                        help="with --image-list: folder of <id>.jpg images")
    parser.add_argument("--output", "-o", required=True, metavar="FILE",
                        help="embedding file to write (.npz)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resize", type=int, default=256,
                        help="short side before the center crop (default 256)")
    parser.add_argument("--crop", type=int, default=224,
                        help="center crop size (default 224)")
    parser.add_argument("--workers", type=int, default=8,
                        help="threads decoding images (default 8)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="computation dtype (bfloat16 is faster on GPU/TPU)")
    parser.add_argument("--shard", action="store_true",
                        help="split each batch over all local devices")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="cache each split's features here; a rerun reuses "
                        "complete caches")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the progress bar")
    parser.set_defaults(func=run_features)


def _load_splits(args) -> list[tuple[str | None, data.ImageDataset]]:
    """The datasets that the arguments name, one per split, in split order."""
    sizes = dict(resize=args.resize, crop=args.crop, num_workers=args.workers)
    names = args.split.split(",") if args.split else None
    if args.tfds:
        return [(s, data.load_tfds(args.tfds, s, data_dir=args.data_dir, **sizes))
                for s in names or ["train"]]
    if args.image_list:
        if not args.image_root:
            raise ValueError("--image-list needs --image-root (the images' folder).")
        lists = [Path(f) for f in args.image_list]
        pairs = [line.split(maxsplit=1) for f in lists
                 for line in f.read_text().splitlines()]
        classes = sorted({p[1] for p in pairs if len(p) == 2})
        return [(f.stem, data.load_image_list(f, args.image_root,
                                              class_names=classes, **sizes))
                for f in lists]
    root = Path(args.image_folder)
    if args.split_file:
        return [(Path(f).stem, data.load_image_folder(root, split_file=f, **sizes))
                for f in args.split_file]
    if names:
        return [(s, data.load_image_folder(root / s, split=s, **sizes))
                for s in names]
    return [(None, data.load_image_folder(root, **sizes))]


def run_features(args: argparse.Namespace) -> int:
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else None
    apply_fn, params = features.load_model(args.weights, dtype=dtype)
    splits = _load_splits(args)
    sharding = None
    if args.shard:
        sharding = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    start = time.perf_counter()
    Z, labels, ids, codes = [], [], [], []
    for code, (_, dataset) in enumerate(splits):
        logger.info("extracting %r", dataset)
        cache = None
        if args.cache_dir:
            cache = Path(args.cache_dir) / f"{Path(args.output).stem}.{code}.npz"
        Z.append(features.extract_features(
            apply_fn, params, dataset, batch_size=args.batch_size, cache=cache,
            cache_key=f"{dataset!r} resize={args.resize} dtype={args.dtype}",
            sharding=sharding, progress=not args.no_progress))
        labels.append(dataset.labels)
        ids.append(dataset.ids)
        codes.append(np.full(len(dataset), code, np.int64))
    extra = {"ids": np.concatenate(ids),
             "class_names": np.asarray(splits[0][1].class_names)}
    if splits[0][0] is not None:
        extra["split"] = np.concatenate(codes)
        extra["split_names"] = np.asarray([name for name, _ in splits])
    Z = np.concatenate(Z)
    data.save_embeddings(args.output, Z, np.concatenate(labels), **extra)
    seconds = time.perf_counter() - start
    print(f"wrote {args.output}: {Z.shape[0]} images x {Z.shape[1]} features, "
          f"{splits[0][1].num_classes} classes, splits "
          f"{[name for name, _ in splits]} in {seconds:.1f} s")
    return 0
