"""Dataset optimisation with the dataset derivative (paper sec. 3.4 and 4).

Detect mislabeled or detrimental samples, reweight a dataset, extend a core set
from a pool (also across modalities), learn augmentation probabilities, and
the baselines the paper compares with.
"""

from diva_jax.curation._augment import (
    augmentation_probabilities,
    flip_images,
    flipped_features,
)
from diva_jax.curation._baselines import (
    active_bias,
    learning_to_reweight,
    ridge_test_error,
)
from diva_jax.curation._detect import detect
from diva_jax.curation._extend import ExtendResult, extend, uniform_extend
from diva_jax.curation._reweight import (
    ReweightResult,
    reweight,
    select_learning_rate,
)
