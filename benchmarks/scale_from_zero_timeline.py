"""Draws one scale-from-zero run as a timeline: docs/scale-from-zero.png (docs/autoscaling.md, "Tests").

    SCALE_FROM_ZERO_TIMELINE=/tmp/sfz.json CI=true .venv/bin/python -m pytest tests/e2e/test_keda.py -k scale_from_zero
    .venv/bin/python benchmarks/scale_from_zero_timeline.py /tmp/sfz.json

The JSON is what test_scale_from_zero_through_the_gateway (tests/e2e/test_keda.py) records: seconds from
the first request to each event it saw (the held comment, KEDA's scale to one, the pod Ready, our worker
ready, the first token, the answer, KEDA's lastActiveTime, the scale back to zero).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PHASES = [  # (label, from event, to event, colour)
    ("request held by the gateway", "request", "first_token", "#9ecae1"),
    ("KEDA: next poll sees held=1, scales 0 -> 1", "request", "scaled", "#fdae6b"),
    ("scheduled, pod Ready (kwok)", "scaled", "pod_ready", "#a1d99b"),
    ("worker start + tiny model load", "pod_ready", "worker_ready", "#bcbddc"),
    ("gateway: probe finds it, forwards, first token", "worker_ready", "first_token", "#fb6a4a"),
    ("answers stream", "first_token", "answered", "#74c476"),
    ("idle: the delay, counted from KEDA's last active poll", "last_active", "scaled_to_zero", "#d9d9d9"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("timeline", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "scale-from-zero.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = json.loads(args.timeline.read_text())
    t = record["seconds_from_first_request"]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for row, (label, start, end, colour) in enumerate(PHASES):
        ax.barh(row, t[end] - t[start], left=t[start], color=colour, edgecolor="black", linewidth=0.5)
        ax.text(t[end] + 0.15, row, f"{label}  ({t[end] - t[start]:.2f} s)", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_yticks([])
    ax.set_xlabel("seconds from the first request (cold: the variant at zero)")
    ax.set_xlim(0, t["scaled_to_zero"] * 1.6)
    ax.set_title(f"Scale from zero through the gateway (KEDA v2.21.0, kwok, tiny model; scaleDownDelaySeconds "
                 f"{record['scale_down_delay_seconds']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
