"""Failed requests and latency during a rolling update behind a real nginx (docs/benchmarks.md).

The sequence of tests/reliability/test_rolling_update_nginx.py, longer: two `deepseek-worker --model
tiny` processes, Debian's nginx with a weighted upstream reloaded at each step, a client at --rate
chat completions per second (max_tokens 4) for --seconds, one long stream in flight on the old worker
at its SIGTERM. Prints a markdown table per phase and in total.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/rolling_update_nginx.py --seconds 60 --rate 10
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from deepseek_worker.testing.rolling import Timings, find_nginx, markdown, run_rollout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60, help="client duration in total (default 60)")
    p.add_argument("--rate", type=float, default=10, help="chat completions per second (default 10)")
    p.add_argument("--old-alone", type=float, default=10, help="seconds before the new worker starts")
    p.add_argument("--both", type=float, default=5, help="seconds with both workers in the upstream")
    p.add_argument("--stream-tokens", type=int, default=1000, help="max_tokens of the long stream")
    p.add_argument("--keepalive", action="store_true",
                   help="reuse client connections to nginx (default: a new connection per request)")
    p.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a temporary dir)")
    args = p.parse_args()
    nginx = find_nginx()
    if nginx is None:
        print("nginx not installed (tools/install-apt.sh installs Debian's nginx package)", file=sys.stderr)
        return 2
    timings = Timings(old_alone=args.old_alone, both=args.both, new_alone=2, total=args.seconds)
    with tempfile.TemporaryDirectory(prefix="rolling-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run_rollout(workdir, nginx, rate=args.rate, timings=timings, stream_tokens=args.stream_tokens,
                             keepalive=args.keepalive, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"client connections: {'keep-alive' if args.keepalive else 'one per request'}; "
          f"{os.cpu_count()} CPU(s)\n")
    print(markdown(report, args.rate))
    return 1 if report.failed or not report.stream.ok or report.old_exit != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
