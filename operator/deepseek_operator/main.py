"""kopf entry point: `deepseek-operator [kopf run options]` == `kopf run -m deepseek_operator.main ...`.

Startup settings, each with its reason:
- progress and diff-base storage in `deepseek.ai/*` annotations, not in `status`: the status
  subresource belongs to status.py alone and its schema has no room for kopf's bookkeeping. Today
  kopf writes neither (handlers.py registers no change handlers, so metadata-only edits cost no
  write); the settings only keep a future change handler out of the status.
- posting handler logs as Events is off (kopf's default since 1.45); the reconcile posts the Events
  that matter (rollbacks, missing integrations) itself.
- kopf watches only DeepSeekDeployments. The children are watched by the operator's own caches
  (cache.py), with the server-side label selector `deepseek.ai/deployment`: in a large cluster the
  operator never streams every pod, and kopf's per-object machinery is not spent on child events.
- every watch (kopf's and the caches') is restarted every 10 minutes (server-side timeout;
  DEEPSEEK_OPERATOR_WATCH_TIMEOUT_SECONDS) so a silently dead connection cannot leave the operator
  blind; each resumes from its last resourceVersion. The churn soak (tests/e2e/test_churn_soak.py)
  sets 2 s to inject restarts.
- daemon and timer cancellation is polled every second, not every 60 s (kopf's default). There are
  none today: the resync is one cluster-wide loop (controller.py) precisely so that kopf puts no
  finalizer on DeepSeekDeployments and `kubectl delete` never waits for the operator.
- the operator's Prometheus metrics are served on DEEPSEEK_OPERATOR_METRICS_PORT (default 9090; 0 = off).

The operator's own settings come from the environment once, at startup (settings.py); the Controller
(controller.py) is created then, kept in kopf's memo, started after the settings and stopped at cleanup.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import zlib
from typing import Any

import kopf

from deepseek_operator import metrics
from deepseek_operator.controller import Controller
from deepseek_operator.handlers import MEMO_KEY, controller_of  # importing handlers registers them with kopf
from deepseek_operator.kopf_settings import configure_kopf
from deepseek_operator.leadership import Leadership
from deepseek_operator.settings import NAMESPACES_VARIABLE, Settings


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's settings, and the Controller (not started yet) in kopf's memo for every handler."""
    ours = Settings.from_env(os.environ)
    configure_kopf(settings, ours)
    memo[MEMO_KEY] = Controller(ours, leadership(settings, ours))
    if ours.metrics_port:
        metrics.start_metrics_server(ours.metrics_port)


def leadership(settings: kopf.OperatorSettings, ours: Settings) -> Leadership:
    """This replica's peering (leadership.py), off with `--standalone`; it fills in kopf's priority
    when none was given."""
    if settings.peering.standalone:
        return Leadership()
    identity = os.environ.get("POD_ID", "")  # set by cli() before kopf read it
    settings.peering.priority = settings.peering.priority or priority_of(identity or socket.gethostname())
    return Leadership(name=settings.peering.name, priority=settings.peering.priority, identity=identity,
                      clusterwide=ours.namespaces is None)


@kopf.on.startup()
async def start_controller(memo: kopf.Memo, **_: Any) -> None:
    """List and start watching the children before the first resource arrives, then start the workers
    and the resync loop (after configure(): kopf runs startup handlers in order)."""
    await controller_of(memo).start()


@kopf.on.cleanup()
async def stop_controller(memo: kopf.Memo, **_: Any) -> None:
    """Stop the workers (a reconcile in flight is cancelled), the resync loop and the informers."""
    await controller_of(memo).stop()


def priority_of(identity: str) -> int:
    """A peering priority from the replica's identity (its pod name): distinct replicas get distinct
    priorities (1 in a million collide; both then pause with kopf's warning until one restarts)."""
    return zlib.crc32(identity.encode()) % 1_000_000 + 1


def handled_namespaces(args: list[str]) -> list[str] | None:
    """The namespaces of kopf's `-n/--namespace` options; None for --all-namespaces, none given, or
    a glob pattern (then the caches watch every namespace and only owners kopf handles reconcile)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-n", "--namespace", action="append", default=[])
    parser.add_argument("-A", "--all-namespaces", action="store_true")
    known, _ = parser.parse_known_args(args)
    if known.all_namespaces or not known.namespace or any(set(n) & set("*?[!") for n in known.namespace):
        return None
    return sorted(set(known.namespace))


def cli() -> None:
    """Console script: pass every argument through to `kopf run` (the caches learn the namespaces)."""
    from kopf.cli import main as kopf_main

    namespaces = handled_namespaces(sys.argv[1:])  # for Settings.from_env(), in configure()
    if namespaces is None:
        os.environ.pop(NAMESPACES_VARIABLE, None)
    else:
        os.environ[NAMESPACES_VARIABLE] = ",".join(namespaces)
    # kopf's peering identity (kopf reads POD_ID; the chart sets it to the pod name): set it here when
    # absent, so leadership.py knows which heartbeat is this replica's own.
    os.environ.setdefault("POD_ID", f"{socket.gethostname()}-{os.getpid()}")
    kopf_main(args=["run", "-m", "deepseek_operator.main", *sys.argv[1:]], prog_name="deepseek-operator")
