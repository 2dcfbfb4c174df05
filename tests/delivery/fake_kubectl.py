#!/usr/bin/env python3
"""A scripted stand-in for kubectl, for testing scripts/deploy.sh without an API server.

State lives in the JSON file named by $FAKE_KUBECTL_STATE:
  {"object": {...DeepSeekDeployment...}, "timeline": [status, ...], "refuse_patch": "msg" | null,
   "calls": [...]}
`patch` sets spec.image (bumping metadata.generation when it changes); after the patch, each
`get -o jsonpath` that reads `.status.observedGeneration` first applies the next status of the timeline
(the last one then stays), like an operator making progress between polls.
Supports only the jsonpath forms deploy.sh uses: `{.a.b}`, `{.status.conditions[?(@.type=="T")].f}`,
`{"literal"}` and `{range .list[*]}...{end}` (fields inside relative to each item). Missing keys print
nothing, as kubectl's `-o jsonpath` does.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

FIELD = re.compile(r"\{([^{}]*)\}")
RANGE = re.compile(r"\{range (\.[\w.]+)\[\*\]\}(.*?)\{end\}", re.DOTALL)
CONDITION = re.compile(r'^\.status\.conditions\[\?\(@\.type=="(\w+)"\)\]\.(\w+)$')


def lookup(obj: dict[str, Any], path: str) -> str:
    if path.startswith('"'):
        return str(json.loads(path))
    match = CONDITION.match(path)
    if match:
        for cond in obj.get("status", {}).get("conditions", []):
            if cond.get("type") == match.group(1):
                return str(cond.get(match.group(2), ""))
        return ""
    node = walk(obj, path)
    return "" if node is None else str(node)


def walk(obj: Any, path: str) -> Any:
    node: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def render(obj: dict[str, Any], expr: str) -> str:
    """A jsonpath template: each range over its list's items, then the plain fields."""
    def each(match: re.Match[str]) -> str:
        items = walk(obj, match.group(1)) or []
        return "".join(FIELD.sub(lambda m, item=item: lookup(item, m.group(1)), match.group(2)) for item in items)
    return FIELD.sub(lambda m: lookup(obj, m.group(1)), RANGE.sub(each, expr))


def main(argv: list[str]) -> int:
    path = os.environ["FAKE_KUBECTL_STATE"]
    with open(path) as f:
        state = json.load(f)
    state.setdefault("calls", []).append(argv)
    args = list(argv)
    if args[:1] == ["--namespace"]:
        args = args[2:]
    obj = state["object"]
    code = 0
    if args[0] == "get" and args[2] != obj["metadata"]["name"]:
        print(f'Error from server (NotFound): deepseekdeployments.deepseek.ai "{args[2]}" not found', file=sys.stderr)
        code = 1
    elif args[0] == "get" and len(args) > 3 and args[3] == "-o":
        expr = args[4].removeprefix("jsonpath=")
        if ".status.observedGeneration" in expr and state.get("patched") and state["timeline"]:
            obj["status"] = state["timeline"].pop(0) if len(state["timeline"]) > 1 else state["timeline"][0]
        print(render(obj, expr), end="")
    elif args[0] == "get":
        print(f"NAME   IMAGE\n{obj['metadata']['name']}   {obj.get('status', {}).get('image', '')}")
    elif args[0] == "patch":
        if state.get("refuse_patch"):
            print(state["refuse_patch"], file=sys.stderr)
            code = 1
        else:
            image = json.loads(args[args.index("-p") + 1])["spec"]["image"]
            if obj["spec"].get("image") != image:
                obj["spec"]["image"] = image
                obj["metadata"]["generation"] += 1
            state["patched"] = True
            print(f"deepseekdeployment.deepseek.ai/{obj['metadata']['name']} patched")
    else:
        print(f"fake kubectl: unsupported {argv}", file=sys.stderr)
        code = 2
    with open(path, "w") as f:
        json.dump(state, f)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
