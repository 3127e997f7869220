"""Datasets: the embedded digits, embedding files and label noise."""

from diva_jax.data._digits import Split, load_digits, random_fourier_features
from diva_jax.data._embeddings import load_embeddings, save_embeddings
from diva_jax.data._noise import flip_labels
from diva_jax.data._images import (ImageDataset, load_image_folder,
                                   load_image_list, load_tfds)
