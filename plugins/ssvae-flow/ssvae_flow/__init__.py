"""Flow prior for ssvae: ``z = T(u)``, ``u | c ~ N(μ_c, I)``, with a flowjax flow ``T``."""

from ssvae_flow.prior import TRANSFORMERS, FlowPrior, masked_autoregressive_bijection

__all__ = ["TRANSFORMERS", "FlowPrior", "masked_autoregressive_bijection"]
