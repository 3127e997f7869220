"""Features: turn a pretrained network and images into DIVA's ``Z``.

Two linearizations of a network around its pretrained weights (paper sec. 3.1):

- the last layer: penultimate features ``z_i`` (N, d) of a Flax ResNet, from
  torchvision or library weights, extracted in batches (:func:`extract_features`);
- the full network: per-sample Jacobian blocks ``J(x_i)`` (N, K, P), their sketch
  along m random tangents (N, K, m), and the empirical NTK
  (:func:`jacobian_features`, :func:`empirical_ntk`, :func:`linearize`).
"""

from diva_jax.features._checkpoint import load_model, load_resnet, save_resnet
from diva_jax.features._extract import extract_features, params_digest
from diva_jax.features._jacobian import (empirical_ntk, jacobian_features,
                                         linearize)
from diva_jax.features._preprocess import (IMAGENET_MEAN, IMAGENET_STD,
                                           imagenet_preprocess)
from diva_jax.features._resnet import (ResNet, ResNetApply, init_resnet,
                                       resnet18, resnet34, resnet50, resnet_tiny)
from diva_jax.features._torchvision import (convert_state_dict, infer_resnet,
                                            load_torchvision_resnet,
                                            read_state_dict)
