"""Convolutional encoder and component-aware convolutional decoder for ssvae."""

__version__ = "0.2.0"

from ssvae_conv.networks import ConvDecoder, ConvEncoder, image_shape

__all__ = ["ConvDecoder", "ConvEncoder", "__version__", "image_shape"]
