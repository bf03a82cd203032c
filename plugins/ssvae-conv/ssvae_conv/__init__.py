"""Convolutional encoder and component-aware convolutional decoder for ssvae."""

from ssvae_conv.networks import ConvDecoder, ConvEncoder, image_shape

__all__ = ["ConvDecoder", "ConvEncoder", "image_shape"]
