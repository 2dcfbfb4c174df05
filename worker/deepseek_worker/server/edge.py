"""Our edge around an app's routes, the same in front of our engine and of an upstream one.

`add_edge` installs admission (auth, rate limits, concurrency caps, body cap, drain: limits.py)
inside request metrics (metrics.py), so a refused request is counted too. Token metering, quotas and
priorities (metering.py) are part of admission: `app.state.metering` is the interface, tests drive
its quota clock there.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from ..settings import Settings
from .auth import Authenticator
from .lifecycle import WorkerState
from .limits import AdmissionMiddleware, AuthFailureThrottle, RateLimiter, token_endpoint_limiter
from .metering import Metering
from .metrics import Metrics, MetricsMiddleware


def add_edge(app: FastAPI, settings: Settings, state: WorkerState, metrics: Metrics, auth: Authenticator,
             ready: Callable[[], bool]) -> None:
    """Install the edge on `app`, whose routes are already added; `ready` says whether the API opens.

    The rate limiter and the failed-auth throttle live on app.state, so tests can drive their clocks.
    """
    app.state.rate_limiter = RateLimiter(settings.rate_limit_rpm, settings.burst)
    app.state.auth_throttle = AuthFailureThrottle(settings.auth_failures_per_minute)
    # The pod's own variant labels its usage; behind the gateway, forward.py names the serving variant
    # per request (metering.report_served_by), so the gateway's DEEPSEEK_VARIANT labels refusals only.
    app.state.metering = Metering(metrics.registry, settings.variant, auth.caller)
    app.add_middleware(
        AdmissionMiddleware,
        state=state,
        ready=ready,
        identify=auth.identify,
        limiter=app.state.rate_limiter,
        token_limiter=token_endpoint_limiter(settings.rate_limit_rpm, settings.burst),
        auth_throttle=app.state.auth_throttle,
        max_concurrent=settings.max_concurrent_requests,
        max_concurrent_per_key=settings.per_key_concurrency,
        max_body_bytes=settings.max_body_bytes,
        metering=app.state.metering,
        trust_priority_header=settings.trust_gateway_priority,  # behind our gateway only
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last = outermost
