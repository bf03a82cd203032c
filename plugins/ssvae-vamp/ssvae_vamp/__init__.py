"""VampPrior for ssvae: ``p(z) = Σ_k π_k q(z | u_k)`` over K learned pseudo-inputs ``u_k``."""

__version__ = "0.2.0"

from ssvae_vamp.prior import VampPrior, vamp_log_density
from ssvae_vamp.pseudo_inputs import initial_pseudo_inputs

__all__ = ["VampPrior", "__version__", "initial_pseudo_inputs", "vamp_log_density"]
