"""diva-jax: the dataset derivative of a learning task (DIVA, ICLR 2022) in JAX."""

from diva_jax._checks import one_hot
from diva_jax.curation import (
    augmentation_probabilities,
    detect,
    extend,
    reweight,
    uniform_extend,
)
from diva_jax._derivative import (
    dataset_derivative,
    model_derivative,
    value_and_dataset_derivative,
)
from diva_jax._lambda import select_lambda
from diva_jax._losses import cross_entropy, squared
from diva_jax._loo import (
    fit_ridge,
    loo_loss,
    loo_predictions,
    loo_residuals,
    validation_loss,
)
from diva_jax._sharding import sample_mesh, shard_samples
from diva_jax._streaming import (
    streaming_dataset_derivative, streaming_value_and_dataset_derivative,
)

__version__ = "0.1.0"
