"""ssvae: semi-supervised variational autoencoders whose latent space is the classifier.

The main entry points::

    from ssvae_core import SSVAEClassifier, load_config, default_config

``__version__`` is the package's version, the one place it is written (the build reads it).
"""

__version__ = "0.2.0"

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import Config, config_from_dict, default_config, load_config
from ssvae_core.errors import CheckpointError, ConfigError, DataError, PluginError, SSVAEError
from ssvae_core.model import SSVAE, build_model
from ssvae_core.registry import Registry, default_registry

__all__ = [
    "SSVAE",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "PluginError",
    "Registry",
    "SSVAEClassifier",
    "SSVAEError",
    "__version__",
    "build_model",
    "config_from_dict",
    "default_config",
    "default_registry",
    "load_config",
]
