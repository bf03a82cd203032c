"""Geometric mixture-of-Gaussians prior: ``p(z|c) = N(μ_c, I)`` with fixed, laid-out centres."""

from ssvae_geometric.prior import GeometricMixturePrior, geometric_centres

__all__ = ["GeometricMixturePrior", "geometric_centres"]
