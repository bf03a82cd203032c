"""Registers the ``conv`` encoder and decoder through the ``ssvae`` entry-point group."""

from __future__ import annotations

import math
from dataclasses import dataclass

from jaxtyping import PRNGKeyArray

from ssvae_conv.networks import ConvDecoder, ConvEncoder
from ssvae_core.plugin import ACTIVATIONS, BuildContext, ComponentFactory, hookimpl, option


@dataclass(frozen=True)
class ConvOptions:
    channels: tuple[int, ...] = option(
        (32, 64),
        help="feature maps of the stride-2 conv layers, input side first (the decoder mirrors "
        "them); the decoder needs H and W divisible by 2**len(channels)",
        minimum=1,
    )
    kernel_size: int = option(4, help="convolution kernel size", choices=(3, 4))
    activation: str = option("gelu", help="activation function", choices=tuple(ACTIVATIONS))


def _build_conv_encoder(options: ConvOptions, context: BuildContext, key: PRNGKeyArray) -> ConvEncoder:
    return ConvEncoder(
        context.input_shape,
        context.latent_dim,
        context.num_components,
        options.channels,
        options.kernel_size,
        options.activation,
        key=key,
    )


def _build_conv_decoder(options: ConvOptions, context: BuildContext, key: PRNGKeyArray) -> ConvDecoder:
    return ConvDecoder(
        context.input_shape,
        context.latent_dim,
        options.channels,
        options.kernel_size,
        options.activation,
        context.conditioning,
        context.embedding_dim,
        context.likelihood.scale_size(math.prod(context.input_shape)),
        key=key,
    )


@hookimpl
def ssvae_register_encoders() -> dict[str, ComponentFactory]:
    return {
        "conv": ComponentFactory(
            ConvEncoder, ConvOptions, _build_conv_encoder,
            "stride-2 convolutions on (H, W), (C, H, W) or (H, W, C) images, then linear heads",
        )
    }


@hookimpl
def ssvae_register_decoders() -> dict[str, ComponentFactory]:
    return {
        "conv": ComponentFactory(
            ConvDecoder, ConvOptions, _build_conv_decoder,
            "transposed convolutions with concat / film / cin / none conditioning; "
            "H, W divisible by 2**len(channels)",
        )
    }
