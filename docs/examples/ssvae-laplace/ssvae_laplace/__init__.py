"""Laplace mixture prior for ssvae: ``p(z|c) = Π_d Laplace(z_d; μ_{c,d}, b)``, π uniform."""

__version__ = "0.2.0"

from ssvae_laplace.prior import LaplaceMixturePrior, gaussian_laplace_kl, laplace_log_density

__all__ = ["LaplaceMixturePrior", "__version__", "gaussian_laplace_kl", "laplace_log_density"]
