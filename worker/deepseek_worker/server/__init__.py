"""The HTTP edge: build_app(engine, settings) -> FastAPI.

- app.py: build_app (lifespan, middleware order); errors.py: every error leaves as one JSON shape
- routes/: one module per route family (models, generation, token, health and metrics)
- jobs.py, responses.py, streaming.py: request -> engine job, JSON replies, SSE streams
- auth.py, limits.py, metrics.py, lifecycle.py: keys/JWT, admission, Prometheus, drain and exit codes
"""

from .app import build_app

__all__ = ["build_app"]
