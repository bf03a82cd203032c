"""``ssvae studio``: a local web page to explore a run's latent space, label what the model
asks for, and retrain (see docs/user-guide.md, "The labeling studio").

Needs the ``studio`` extra: ``pip install 'ssvae-core[studio]'`` (Starlette, uvicorn and the
Plotly.js bundled with ``plotly``).
"""

from ssvae_core.studio.session import RetrainJob, StudioError, StudioSession, shortcut_keys

__all__ = ["RetrainJob", "StudioError", "StudioSession", "create_app", "serve", "shortcut_keys"]


def __getattr__(name: str):  # the web layer imports Starlette only when asked for
    if name in ("create_app", "serve"):
        from ssvae_core.studio import server

        return getattr(server, name)
    raise AttributeError(f"module 'ssvae_core.studio' has no attribute {name!r}")
