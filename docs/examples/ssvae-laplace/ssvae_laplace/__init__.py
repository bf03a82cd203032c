"""Laplace mixture prior for ssvae: ``p(z|c) = Π_d Laplace(z_d; μ_{c,d}, b)``, π uniform."""

from ssvae_laplace.prior import LaplaceMixturePrior, gaussian_laplace_kl, laplace_log_density

__all__ = ["LaplaceMixturePrior", "gaussian_laplace_kl", "laplace_log_density"]
