"""ssvae: semi-supervised variational autoencoders whose latent space is the classifier.

The main entry points:

    from ssvae_core import SSVAEClassifier, load_config, default_config

``__version__`` is the package's version, written once in ``ssvae_core/version.py`` (the
build reads it there).
"""

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import Config, config_from_dict, default_config, load_config
from ssvae_core.errors import CheckpointError, ConfigError, DataError, PluginError, SSVAEError
from ssvae_core.modelling.model import SSVAE, build_model
from ssvae_core.registry import Registry, default_registry
from ssvae_core.version import __version__

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
