"""Flow prior for ssvae: ``z = T(u)``, ``u | c ~ N(μ_c, I)``, with a flowjax flow ``T``."""

__version__ = "0.2.0"

from ssvae_flow.prior import TRANSFORMERS, FlowPrior, masked_autoregressive_bijection

__all__ = ["TRANSFORMERS", "FlowPrior", "__version__", "masked_autoregressive_bijection"]
