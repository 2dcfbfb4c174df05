"""A kubeconfig for the sandbox: one cluster over plain HTTP, no credentials."""

from __future__ import annotations

import pathlib
import shutil

import yaml

CONTEXT = "deepseek-sandbox"


def render(url: str, namespace: str = "default") -> str:
    """The kubeconfig text pointing at ``url`` (context ``deepseek-sandbox``)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": url}}],
        "users": [{"name": CONTEXT, "user": {}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}],
        "current-context": CONTEXT,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write(path: pathlib.Path | str, url: str, namespace: str = "default") -> pathlib.Path:
    """Write the kubeconfig (mode 0600, parents created) and return its path."""
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(url, namespace), encoding="utf-8")
    target.chmod(0o600)
    return target


def fresh_kubectl_cache(kubeconfig_path: pathlib.Path) -> pathlib.Path:
    """An empty kubectl cache directory next to the kubeconfig (``<kubeconfig>.kubectl-cache``).

    kubectl caches API discovery for hours under ``~/.kube/cache/discovery/<host>_<port>``. A sandbox
    that reuses a port an earlier sandbox had, with other CRDs installed, would otherwise be answered
    from that stale cache: ``kubectl explain dsd`` then fails with "doesn't have a resource type"
    (``kubectl get`` retries after a cache miss; ``explain`` does not). Point ``KUBECACHEDIR`` here.
    """
    cache = kubeconfig_path.with_name(kubeconfig_path.name + ".kubectl-cache")
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    return cache
