"""Geometric mixture-of-Gaussians prior: ``p(z|c) = N(μ_c, I)`` with fixed, laid-out centres."""

__version__ = "0.2.0"

from ssvae_geometric.prior import GeometricMixturePrior, geometric_centres

__all__ = ["GeometricMixturePrior", "__version__", "geometric_centres"]
