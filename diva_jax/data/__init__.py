"""Datasets: the embedded digits, embedding files and label noise."""

from diva_jax.data._digits import Split, load_digits, random_fourier_features
from diva_jax.data._embeddings import load_embeddings, save_embeddings
from diva_jax.data._noise import flip_labels
