"""The HTTP edge: build_app(engine, settings) -> FastAPI.

- app.py: build_app (lifespan, middleware order); errors.py: every error leaves as one JSON shape
- routes/: one module per route family (models, generation, token, health and metrics)
- jobs.py, responses.py, streaming.py: request -> engine job, JSON replies, SSE streams
- auth.py, limits.py, metrics.py, lifecycle.py: keys/JWT, admission, Prometheus, drain and exit codes
- proxy.py, upstream.py, relay.py: proxy mode, the same edge in front of an engine's own server
  (build_proxy_app(settings); vLLM/SGLang in the pod), relaying its bytes unchanged
"""

from .app import build_app

__all__ = ["build_app"]
