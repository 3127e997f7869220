"""Image datasets for feature extraction: TFDS datasets and folders of images.

Every loader returns an :class:`ImageDataset`: random access to preprocessed
NHWC float32 batches (``dataset[a:b]``, standard ImageNet preprocessing), with
labels, string ids and class names. Nothing is ever downloaded: TFDS datasets
are read from a local ``data_dir`` with ``tfds.data_source`` (array_record
files, no TensorFlow needed); the paper's other datasets are read from the
folders that users unpack.

Where to get the data (the paper's fine-grained benchmarks):

- TFDS (``load_tfds``): ``caltech_birds2011``, ``oxford_flowers102``,
  ``oxford_iiit_pet``, ``cars196``, ``caltech101``, ``svhn_cropped``, ... Build
  once with ``tfds build NAME --data_dir DIR --file_format array_record`` (put
  manually downloaded archives in ``DIR/downloads/manual``), then pass
  ``data_dir=DIR`` (``--data-dir DIR`` on the command line).
- MIT Indoor-67: unpack ``indoorCVPR_09.tar``; ``Images/`` has one folder per
  class, and ``TrainImages.txt``/``TestImages.txt`` list the splits:
  ``load_image_folder("Images", split_file="TrainImages.txt")``.
- Caltech-256: ``256_ObjectCategories/`` has one folder per class:
  ``load_image_folder("256_ObjectCategories")``.
- FGVC-Aircraft: ``fgvc-aircraft-2013b/data/`` has ``images/`` and
  ``images_variant_{train,val,test}.txt`` (``<image id> <class name>`` lines):
  ``load_image_list("images_variant_train.txt", "images")``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from diva_jax.features import imagenet_preprocess

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                    ".webp")
PAPER_TFDS_DATASETS = ("caltech_birds2011", "oxford_flowers102", "oxford_iiit_pet",
                       "cars196", "caltech101", "svhn_cropped")
_TFDS_ID_KEYS = ("file_name", "image/filename", "image/file_name", "id")


class ImageDataset:
    """Images with labels, read and preprocessed on demand.

    ``dataset[i]`` is one image (h, w, 3) and ``dataset[a:b]`` a batch
    (b, h, w, 3), float32 after :func:`imagenet_preprocess` (``resize`` then
    ``crop``); batches are decoded by a thread pool (PIL releases the GIL).
    ``labels`` (N,) int64 and ``ids`` (N,) str: for TFDS datasets they are
    read along with the images, so asking for them after a full pass over the
    images costs nothing (and before it, one pass over the records).
    """

    def __init__(self, read: Callable[[int], tuple[np.ndarray, int, str]], size: int,
                 *, class_names: Sequence[str], name: str, split: str | None = None,
                 labels=None, ids=None, resize: int = 256, crop: int = 224,
                 num_workers: int = 8):
        self._read = read
        self._size = size
        self._labels = (np.full(size, -1, np.int64) if labels is None
                        else np.asarray(labels, np.int64))
        self._ids = np.full(size, None, object) if ids is None else np.asarray(
            ids, object)
        self.class_names = tuple(class_names)
        self.name, self.split = name, split
        self.resize, self.crop, self.num_workers = resize, crop, num_workers

    def __len__(self) -> int:
        return self._size

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.class_names)

    def image(self, index: int) -> np.ndarray:
        """The raw uint8 image ``index``; records its label and id."""
        image, label, image_id = self._read(int(index))
        self._labels[index], self._ids[index] = label, image_id
        return image

    def _preprocessed(self, index: int) -> np.ndarray:
        return imagenet_preprocess(self.image(index), resize=self.resize,
                                   crop=self.crop)

    def __getitem__(self, index):
        if isinstance(index, slice):
            indices = range(*index.indices(self._size))
            if self.num_workers > 1 and len(indices) > 1:
                with concurrent.futures.ThreadPoolExecutor(self.num_workers) as pool:
                    images = list(pool.map(self._preprocessed, indices))
            else:
                images = [self._preprocessed(i) for i in indices]
            shape = (0, self.crop, self.crop, 3)
            return np.stack(images) if images else np.zeros(shape, np.float32)
        if not -self._size <= index < self._size:
            raise IndexError(f"index {index} out of range for {self._size} images.")
        return self._preprocessed(index % self._size)

    def _fill_metadata(self) -> None:
        missing = np.flatnonzero(self._labels < 0)
        if missing.size:
            logger.info("reading labels of %d records of %s", missing.size, self.name)
            for i in missing:
                self.image(i)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels in ``[0, num_classes)``."""
        self._fill_metadata()
        return self._labels.copy()

    @property
    def ids(self) -> np.ndarray:
        """(N,) str ids: file names relative to the root, or TFDS ids."""
        self._fill_metadata()
        return self._ids.astype(str)

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, crop={self.crop})")


def _read_file(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _from_files(files: list[Path], labels: list[int], ids: list[str],
                class_names: list[str], name: str, split, **kwargs) -> ImageDataset:
    if not files:
        raise ValueError(f"no images found for {name} (extensions "
                         f"{', '.join(IMAGE_EXTENSIONS)}).")

    def read(i: int):
        return _read_file(files[i]), labels[i], ids[i]

    return ImageDataset(read, len(files), class_names=class_names, name=name,
                        split=split, labels=labels, ids=ids, **kwargs)


def load_image_folder(root: str | os.PathLike, *, split_file=None,
                      split: str | None = None, resize: int = 256, crop: int = 224,
                      num_workers: int = 8) -> ImageDataset:
    """A folder with one subfolder of images per class (sorted names -> 0..K-1).

    Args:
      root: the folder; its subfolders are the classes.
      split_file: optional text file of ``class/file`` paths relative to
        ``root``, one per line (MIT Indoor-67's ``TrainImages.txt``); only those
        images are loaded, with the class indices of all subfolders.
      split: a name for the split (stored with the features).
      resize, crop: preprocessing sizes (see :func:`imagenet_preprocess`).
    """
    root = _existing_dir(root, "image folder")
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not class_names:
        raise ValueError(f"{root} has no class subfolders; expected "
                         "root/<class name>/<image files>.")
    if split_file is None:
        files = [f for c in class_names for f in _list_images(root / c)]
    else:
        lines = Path(split_file).read_text().splitlines()
        files = [root / line.strip() for line in lines if line.strip()]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"{len(absent)} images of {split_file} are not "
                                    f"under {root}, e.g. {absent[0]}.")
    index = {c: k for k, c in enumerate(class_names)}
    labels = [index[f.relative_to(root).parts[0]] for f in files]
    ids = [f.relative_to(root).as_posix() for f in files]
    return _from_files(files, labels, ids, class_names, root.name, split,
                       resize=resize, crop=crop, num_workers=num_workers)


def load_image_list(list_file: str | os.PathLike, image_root: str | os.PathLike, *,
                    extension: str = ".jpg", class_names: Sequence[str] | None = None,
                    split: str | None = None, resize: int = 256, crop: int = 224,
                    num_workers: int = 8) -> ImageDataset:
    """Images named by ``<image id> <class name>`` lines (FGVC-Aircraft's lists).

    Args:
      list_file: one ``<id> <class name>`` per line; the name may hold spaces.
      image_root: folder of ``<id><extension>`` files.
      class_names: the classes in label order; default: sorted names in the list
        (pass the same list for every split if a split may lack a class).
    """
    image_root = _existing_dir(image_root, "image folder")
    pairs = [line.split(maxsplit=1)
             for line in Path(list_file).read_text().splitlines() if line.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"{list_file}: every line must read '<image id> <class>'.")
    class_names = sorted({c for _, c in pairs}) if class_names is None else list(
        class_names)
    index = {c: k for k, c in enumerate(class_names)}
    unknown = sorted({c for _, c in pairs} - set(index))
    if unknown:
        raise ValueError(f"{list_file}: classes {unknown[:3]} are not in class_names.")
    files = [image_root / f"{i}{extension}" for i, _ in pairs]
    labels = [index[c] for _, c in pairs]
    return _from_files(files, labels, [i for i, _ in pairs], class_names,
                       Path(list_file).stem, split, resize=resize, crop=crop,
                       num_workers=num_workers)


def _existing_dir(path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist or is not a "
                                "folder.")
    return path


def load_tfds(name: str, split: str = "train", *, data_dir=None, resize: int = 256,
              crop: int = 224, num_workers: int = 8) -> ImageDataset:
    """A TFDS image classification dataset, read from disk (never downloaded).

    Args:
      name: a TFDS name with ``image`` and ``label`` features, e.g. one of
        ``PAPER_TFDS_DATASETS``.
      split: a TFDS split (``"train"``, ``"test"``, ``"train[:80%]"``, ...).
      data_dir: where ``tfds build`` put it (default ``~/tensorflow_datasets``).
      resize, crop: preprocessing sizes.

    Raises:
      FileNotFoundError: the dataset is not prepared under ``data_dir``; the
        message says how to prepare it.
    """
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir,
                                  download=False)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise ValueError(f"{name!r} is not a TFDS dataset name; the paper's are "
                         f"{', '.join(PAPER_TFDS_DATASETS)}.") from err
    except (RuntimeError, FileNotFoundError, AssertionError) as err:  # not prepared
        raise FileNotFoundError(_not_prepared_message(name, data_dir)) from err
    features = source.dataset_info.features
    if "image" not in features or "label" not in features:
        raise ValueError(f"TFDS dataset {name!r} has no 'image' and 'label' "
                         f"features (it has {sorted(features)}).")
    id_key = next((k for k in _TFDS_ID_KEYS if k in features), None)

    def read(i: int):
        example = source[i]
        image_id = example[id_key] if id_key else f"{name}/{split}/{i}"
        if isinstance(image_id, bytes):
            image_id = image_id.decode("utf-8", "replace")
        return np.asarray(example["image"]), int(example["label"]), str(image_id)

    return ImageDataset(read, len(source), class_names=features["label"].names,
                        name=name, split=split, resize=resize, crop=crop,
                        num_workers=num_workers)


def _not_prepared_message(name: str, data_dir) -> str:
    where = data_dir or "~/tensorflow_datasets"
    return (f"TFDS dataset {name!r} is not prepared under {where} in a "
            "random-access format. Nothing is downloaded at run time: prepare it "
            f"once with `tfds build {name} --data_dir {where} --file_format "
            "array_record` (archives that need a manual download go in "
            f"{where}/downloads/manual), then pass data_dir={str(where)!r} "
            "(the --data-dir flag of `diva features`).")
