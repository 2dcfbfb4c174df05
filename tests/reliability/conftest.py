"""The reliability suites' shared fixture: the nginx binary their load balancer runs on."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from deepseek_worker.testing.rolling import find_nginx


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads nginx's worker processes from /proc (Linux only)")
    if importlib.util.find_spec("deepseek_worker.cli") is None:
        pytest.skip("the worker package (deepseek_worker.cli) is not installed")
    binary = find_nginx()
    if binary is None:
        pytest.skip("nginx not installed (tools/install-apt.sh installs Debian's nginx package)")
    return binary
