"""``deepseek-sandbox``: run the emulated cluster until SIGTERM/SIGINT.

Prints the API URL and ``export KUBECONFIG=...`` / ``export KUBECACHEDIR=...`` lines (the second keeps
kubectl's discovery cache per sandbox), then serves until signalled.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import signal
import sys

from .sandbox import Sandbox


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``deepseek-sandbox --help``)."""
    p = argparse.ArgumentParser(prog="deepseek-sandbox", description="An emulated Kubernetes API on 127.0.0.1.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--kubeconfig", type=pathlib.Path, default=pathlib.Path(".sandbox/kubeconfig"))
    p.add_argument("--crds", type=pathlib.Path, default=pathlib.Path("crds"), help="CRDs installed at startup")
    p.add_argument("--extra-crds", type=pathlib.Path, default=None,
                   help="where --with-monitoring / --with-gateway-api find upstream CRDs (else schema-less stand-ins)")
    p.add_argument("--with-monitoring", action="store_true", help="serve monitoring.coreos.com/v1")
    p.add_argument("--with-gateway-api", action="store_true", help="serve gateway.networking.k8s.io/v1")
    p.add_argument("--ready-delay", type=float, default=1.0, help="seconds until a started pod is Ready")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nodes", type=int, default=2)
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run the sandbox until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sandbox = Sandbox(
        args.crds if args.crds.is_dir() else None,
        extra_crds_dir=args.extra_crds, with_monitoring=args.with_monitoring,
        with_gateway_api=args.with_gateway_api, ready_delay=args.ready_delay,
        gpus_per_node=args.gpus_per_node, nodes=args.nodes, host=args.host, port=args.port,
        kubeconfig_path=args.kubeconfig,
    )
    async with sandbox as sb:
        print(f"deepseek-sandbox serving {sb.url}", flush=True)
        print(f"export KUBECONFIG={sb.kubeconfig_path.resolve()}", flush=True)
        print(f"export KUBECACHEDIR={sb.kubectl_cache_dir.resolve()}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
