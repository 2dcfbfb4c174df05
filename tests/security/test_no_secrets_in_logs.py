"""Issue 9 item 11: secrets and prompts never reach logs.

Planted values (API keys, the JWT signing key, a client secret, an HF token, the access tokens the
worker issues, a wrong key that looks like a secret, a distinctive prompt) go into a real
`deepseek-worker` at its most verbose level (`--log-level debug`: root logger at DEBUG, uvicorn's
access log on) and into the Secrets a DeepSeekDeployment names for a real `deepseek-operator
--debug` on the sandbox. After every request path that touches them (authenticated, failed auth, the
token endpoint, plain and streamed generation, validation errors that could echo the body), neither
process's stdout or stderr may contain any of them, nor their base64 (Secret data is base64).

Each process is stopped by its PID (SIGTERM, then SIGKILL at the deadline); every wait has a deadline.
docs/security.md ("Secrets and prompts in logs") describes what this covers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import pathlib
import secrets
import signal
import socket
import sys
from dataclasses import dataclass, field

import httpx
import pytest

from deepseek_sandbox import Sandbox
from deepseek_sandbox.server import REQUEST_LOG
from tests.waiting import eventually, run_process

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
WORKER, OPERATOR = BIN / "deepseek-worker", BIN / "deepseek-operator"
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
STOP_DEADLINE = 30.0


# -- the planted values and the scanner -------------------------------------------------------------
@dataclass
class Planted:
    """Distinctive values, fresh per run: alphanumerics and dashes only, so that JSON, form and URL
    encodings of them are the values themselves."""

    tag: str = field(default_factory=lambda: secrets.token_hex(6))

    def __post_init__(self) -> None:
        t = self.tag
        self.api_key_file = [f"sk-plantedfilekeyone-{t}", f"sk-plantedfilekeytwo-{t}"]
        self.api_key_env = f"sk-plantedenvkey-{t}"
        self.signing_key = f"plantedsigningkey-{t}-" + "s" * 48  # >= 64 bytes: no PyJWT key warning
        self.client_id = "svc-reports"  # an identity, not a secret: it may be logged
        self.client_secret = f"plantedclientsecret-{t}"
        self.hf_token = f"hf_plantedhubtoken{t}"
        self.wrong_key = f"sk-plantedwrongkey-{t}"  # a caller's mistyped key is still a secret
        self.wrong_client_secret = f"plantedwrongclientsecret-{t}"
        self.marker = f"Zanzibarquokka{t}"
        self.prompt = f"{self.marker} please summarise the confidential merger memo for the board"
        self.issued: list[str] = []  # access tokens the worker hands out, added as they come

    def values(self) -> dict[str, str]:
        """Name -> value of everything that must never be logged."""
        out = {f"api key (file) {i}": k for i, k in enumerate(self.api_key_file)}
        out |= {"api key (env)": self.api_key_env, "JWT signing key": self.signing_key,
                "client secret": self.client_secret, "HF token": self.hf_token, "wrong API key": self.wrong_key,
                "wrong client secret": self.wrong_client_secret, "prompt marker": self.marker,
                "prompt": self.prompt, "Basic credentials": f"{self.client_id}:{self.client_secret}"}
        out |= {f"issued access token {i}": tok for i, tok in enumerate(self.issued)}
        # A JWT's signature alone is enough to recognise (and, with the header and claims, replay) it.
        out |= {f"issued token {i} signature": tok.rsplit(".", 1)[1] for i, tok in enumerate(self.issued)}
        return out


def base64_cores(value: str) -> list[str]:
    """The parts of base64(…value…) fixed by `value` alone, for each of the 3 alignments `value` can
    have inside a longer encoded blob (a Secret's `data` holds whole files), standard and url-safe.

    Output char i carries bits 6i..6i+5; it depends on `value` alone iff those bits lie in its bytes."""
    raw = value.encode()
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        core = encoded[math.ceil(8 * shift / 6): (8 * (shift + len(raw))) // 6]
        cores += [core, core.replace("+", "-").replace("/", "_")]
    return cores


def leaks(logs: dict[str, str], planted: dict[str, str]) -> list[str]:
    """'<what> in <log>' for each planted value found in a log, verbatim or as base64."""
    found = []
    for what, value in planted.items():
        needles = [("verbatim", value)] + [("base64", core) for core in base64_cores(value)]
        for log_name, text in logs.items():
            for form, needle in needles:
                if needle in text:
                    line = next(ln for ln in text.splitlines() if needle in ln)
                    found.append(f"{what} ({form}) in {log_name}: {line[:300]}")
                    break
    return found


def test_the_scanner_sees_values_verbatim_and_in_base64() -> None:
    """The check itself: a value is found in plain text and inside base64 of a larger blob at every
    alignment (as a Secret's data would show it); unrelated text is not flagged."""
    p = Planted()
    for prefix in ("", "a", "ab", "abc\n"):
        blob = f"{prefix}{p.api_key_file[1]}\n{p.signing_key}\n".encode()
        for enc in (base64.b64encode(blob), base64.urlsafe_b64encode(blob)):
            text = f"DEBUG kopf: data={{'api-keys': '{enc.decode()}'}}"
            found = leaks({"log": text}, {"key": p.api_key_file[1], "signing": p.signing_key})
            assert len(found) == 2, (prefix, found)
    assert leaks({"log": f"INFO: 401 for {p.wrong_key}"}, {"wrong": p.wrong_key})
    assert leaks({"log": "INFO: 127.0.0.1 - POST /v1/chat/completions 401"}, p.values()) == []


# -- processes ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    """A subprocess whose stdout and stderr go to their own files."""

    name: str
    proc: asyncio.subprocess.Process
    out: pathlib.Path
    err: pathlib.Path

    @classmethod
    async def start(cls, name: str, argv: list[str], env: dict[str, str], tmp: pathlib.Path) -> Process:
        out, err = tmp / f"{name}.stdout", tmp / f"{name}.stderr"
        with out.open("wb") as o, err.open("wb") as e:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=o, stderr=e, env=env)
        return cls(name, proc, out, err)

    def logs(self) -> dict[str, str]:
        return {f"{self.name} {p.suffix[1:]}": p.read_text(errors="replace") for p in (self.out, self.err)}

    def tail(self, n: int = 40) -> str:
        return "\n".join(f"--- {k}\n" + "\n".join(v.splitlines()[-n:]) for k, v in self.logs().items())

    async def stop(self) -> int:
        """SIGTERM to its PID, SIGKILL if it is still there after STOP_DEADLINE; its exit code."""
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_DEADLINE)
            except TimeoutError:
                os.kill(self.proc.pid, signal.SIGKILL)
                await asyncio.wait_for(self.proc.wait(), STOP_DEADLINE)
        return int(self.proc.returncode or 0)


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}


def assert_no_leaks(processes: list[Process], planted: Planted) -> None:
    logs = {k: v for p in processes for k, v in p.logs().items()}
    found = leaks(logs, planted.values())
    assert not found, "planted secrets or prompts reached the logs:\n" + "\n".join(found)


# -- the worker --------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_worker_logs_carry_no_secrets_or_prompts(tmp_path: pathlib.Path) -> None:
    p = Planted()
    (tmp_path / "api-keys").write_text("# keys\n" + "\n".join(p.api_key_file) + "\n")
    (tmp_path / "signing-key").write_text(p.signing_key + "\n")
    (tmp_path / "clients").write_text(f"{p.client_id}:{p.client_secret}\n")
    port = free_port()
    argv = [str(WORKER), "--model", "tiny", "--host", "127.0.0.1", "--port", str(port), "--log-level", "debug",
            "--api-keys-file", str(tmp_path / "api-keys"), "--jwt-secret-file", str(tmp_path / "signing-key"),
            "--jwt-clients-file", str(tmp_path / "clients"), "--max-model-len", "256", "--max-new-tokens", "16",
            "--max-body-bytes", "8192"]
    worker = await Process.start("worker", argv, child_env(DEEPSEEK_API_KEYS=p.api_key_env), tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            async def ready() -> bool:
                if worker.proc.returncode is not None:
                    pytest.fail(f"worker exited {worker.proc.returncode}:\n{worker.tail()}")
                try:
                    return (await c.get("/health/ready")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready, timeout=180, interval=0.2, what="the worker's readiness")
            await exercise_worker(c, p)
    finally:
        code = await worker.stop()
    assert code == 0, f"the worker did not drain and exit cleanly on SIGTERM ({code}):\n{worker.tail()}"

    text = "\n".join(worker.logs().values())
    # The logs were really captured at the verbose level: access lines for our requests, DEBUG records.
    assert '"POST /v1/chat/completions HTTP/1.1" 401' in text and '"POST /auth/v1/token HTTP/1.1" 200' in text
    assert " DEBUG " in text, worker.tail()
    assert_no_leaks([worker], p)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def exercise_worker(c: httpx.AsyncClient, p: Planted) -> None:
    """Every request path that sees a credential or the prompt, with its expected status. Failed
    authentications come last: the worker throttles them per client address (then 429 refuses even
    a good key), so they are sent until the throttle answers, whatever its limit."""
    chat = {"model": "tiny", "messages": [{"role": "user", "content": p.prompt}], "max_tokens": 4}
    key = bearer(p.api_key_file[0])

    # Authenticated, with each kind of key; one caller also puts a key in the query string (no
    # route takes one, but the access log would print it).
    for token in (*p.api_key_file, p.api_key_env):
        assert (await c.get("/v1/models", headers=bearer(token))).status_code == 200
    assert (await c.get("/v1/models", params={"api_key": p.api_key_env}, headers=key)).status_code == 200

    # The token endpoint: form, JSON and HTTP Basic with the right secret.
    form = {"grant_type": "client_credentials", "client_id": p.client_id, "client_secret": p.client_secret}
    basic = base64.b64encode(f"{p.client_id}:{p.client_secret}".encode()).decode()
    for response in (await c.post("/auth/v1/token", data=form), await c.post("/auth/v1/token", json=form),
                     await c.post("/auth/v1/token", data={"grant_type": "client_credentials"},
                                  headers={"Authorization": f"Basic {basic}"})):
        assert response.status_code == 200, response.text
        p.issued.append(response.json()["access_token"])
    # The secret in a body that is not JSON.
    bad = f'{{"grant_type": "client_credentials", "client_secret": "{p.client_secret}"'
    r = await c.post("/auth/v1/token", content=bad, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text

    # Generation with the prompt: chat (with an issued JWT), streamed chat, text completion.
    r = await c.post("/v1/chat/completions", json=chat, headers=bearer(p.issued[0]))
    assert r.status_code == 200, r.text
    events = []
    async with c.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}, headers=key) as s:
        assert s.status_code == 200
        async for line in s.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events and events[-1] == "[DONE]", events
    r = await c.post("/v1/completions", json={"model": "tiny", "prompt": p.prompt, "max_tokens": 4}, headers=key)
    assert r.status_code == 200, r.text

    # Bodies the validators refuse, each carrying the prompt where error messages like to echo it.
    invalid = [
        {**chat, "temperature": p.prompt},  # wrong type: pydantic's `input` is the prompt
        {**chat, p.marker: p.prompt},  # unknown field named after the prompt: the name is in `loc`
        {"model": "tiny", "messages": [{"role": p.prompt, "content": p.prompt}]},  # bad literal
        {"model": "tiny", "messages": [{"role": "user", "content": [{"type": p.marker, "text": p.prompt}]}]},
        {"model": "tiny", "messages": p.prompt},
        {**chat, "stop": [p.prompt] * 5},
        {**chat, "model": p.prompt},  # unknown model: the 404 names it
    ]
    for body in invalid:
        r = await c.post("/v1/chat/completions", json=body, headers=key)
        assert r.status_code in (400, 404), (body, r.status_code, r.text)
    r = await c.post("/v1/completions", json={"model": "tiny", "prompt": {"text": p.prompt}}, headers=key)
    assert r.status_code == 400, r.text
    truncated = json.dumps(chat)[:-10]  # not JSON at all
    r = await c.post("/v1/chat/completions", content=truncated, headers={**key, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    too_long = {**chat, "messages": [{"role": "user", "content": " ".join([p.prompt] * 40)}]}  # > max-model-len
    assert (await c.post("/v1/chat/completions", json=too_long, headers=key)).status_code == 400
    too_big = {**chat, "messages": [{"role": "user", "content": p.prompt * 200}]}  # > max-body-bytes
    assert (await c.post("/v1/chat/completions", json=too_big, headers=key)).status_code == 413

    # Failed authentication: a wrong key, a forged JWT-shaped token (the JWT decode path), no
    # scheme, Basic instead of Bearer, nothing at all (with the prompt); a wrong client secret at the
    # token endpoint (form and Basic); then wrong keys until the failed-auth throttle answers.
    forged = f"eyJhbGciOiJIUzI1NiJ9.{p.wrong_key}.{p.wrong_client_secret}"
    wrong_basic = base64.b64encode(f"{p.client_id}:{p.wrong_client_secret}".encode()).decode()
    attempts = [c.build_request("POST", "/v1/chat/completions", json=chat, headers=h) for h in (
        bearer(p.wrong_key), bearer(forged), {"Authorization": p.wrong_key},
        {"Authorization": f"Basic {base64.b64encode(p.wrong_key.encode()).decode()}"}, {})]
    attempts += [c.build_request("POST", "/auth/v1/token", data={**form, "client_secret": p.wrong_client_secret}),
                 c.build_request("POST", "/auth/v1/token", data={"grant_type": "client_credentials"},
                                 headers={"Authorization": f"Basic {wrong_basic}"})]
    attempts += [c.build_request("GET", "/v1/models", headers=bearer(f"{p.wrong_key}-{i}")) for i in range(30)]
    statuses = [(await c.send(request)).status_code for request in attempts]
    assert statuses[0] == 401 and set(statuses) <= {401, 429}, statuses


# -- the operator ------------------------------------------------------------------------------------
def secret(name: str, data: dict[str, str]) -> str:
    """A Secret as JSON for `kubectl create` (not apply: no last-applied annotation holding the data)."""
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
                       "data": encoded})


DSD = """\
apiVersion: deepseek.ai/v1alpha1
kind: DeepSeekDeployment
metadata: {name: chat}
spec:
  image: registry.example.com/deepseek-worker:1.0.0
  replicas: 1
  model:
    id: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
    source: {huggingFace: {tokenSecretRef: {name: chat-hf-token, key: token}}}
  auth:
    apiKeysSecretRef: {name: chat-api-keys}
    jwt: {secretRef: {name: chat-jwt}}
"""


async def kubectl(sb: Sandbox, *args: str, stdin: str | None = None) -> str:
    code, text = await run_process([str(KUBECTL), *args], {**os.environ, **sb.kubectl_env()}, stdin, timeout=60)
    assert code == 0, f"kubectl {' '.join(args)} exited {code}:\n{text}"
    return text


async def reconciles(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics", timeout=5)).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("deepseek_operator_reconciles_total"))


async def test_operator_names_secrets_but_never_reads_or_logs_them(tmp_path: pathlib.Path) -> None:
    if not KUBECTL.exists():
        pytest.fail("kubectl missing at .tools/bin/kubectl: run `make bootstrap`")
    p = Planted()
    async with Sandbox(ROOT / "crds", ready_delay=0.3) as sb:
        await kubectl(sb, "create", "-f", "-", stdin=secret("chat-api-keys", {"api-keys": "\n".join(p.api_key_file)}))
        await kubectl(sb, "create", "-f", "-", stdin=secret("chat-jwt", {
            "signing-key": p.signing_key, "clients": f"{p.client_id}:{p.client_secret}\n"}))
        await kubectl(sb, "create", "-f", "-", stdin=secret("chat-hf-token", {"token": p.hf_token}))
        await kubectl(sb, "apply", "-f", "-", stdin=DSD)
        before = list(sb.emulator)  # kubectl's requests so far; the rest are the operator's (and ours below)

        port = free_port()
        env = child_env(**sb.kubectl_env(), DEEPSEEK_OPERATOR_METRICS_PORT=str(port),
                        DEEPSEEK_OPERATOR_RESYNC_SECONDS="1")
        argv = [str(OPERATOR), "--standalone", "--namespace=default", "--debug"]
        operator = await Process.start("operator", argv, env, tmp_path)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as metrics:
                async def ready() -> bool:
                    if operator.proc.returncode is not None:
                        pytest.fail(f"operator exited {operator.proc.returncode}:\n{operator.tail()}")
                    dsd = sb.get("dsd", "default", "chat") or {}
                    conds = {c["type"]: c["status"] for c in dsd.get("status", {}).get("conditions", [])}
                    return conds.get("Ready") == "True"

                await eventually(ready, timeout=90, interval=0.2, what="the DeepSeekDeployment Ready")
                # A spec change (kopf logs diffs at debug) and a rotation of the Secrets (which the
                # operator must not even notice), then a few idle resyncs.
                await kubectl(sb, "patch", "dsd", "chat", "--type=merge", "-p", '{"spec": {"replicas": 2}}')
                p.api_key_file.append(f"sk-plantedrotatedkey-{p.tag}")
                rotated = base64.b64encode("\n".join(p.api_key_file).encode()).decode()
                await kubectl(sb, "patch", "secret", "chat-api-keys", "--type=merge", "-p",
                              json.dumps({"data": {"api-keys": rotated}}))
                start = await reconciles(metrics)

                async def resynced() -> bool:
                    return await reconciles(metrics) >= start + 3

                await eventually(resynced, timeout=60, interval=0.3, what="three more reconciles")
        finally:
            code = await operator.stop()
        log = list(sb.emulator)
        requests = [r for r in log if not any(r is b for b in before)]
        dep = sb.get("deployments", "default", "chat-primary")

    assert len(log) < REQUEST_LOG, "the sandbox's request log overflowed: early requests are not checked"
    assert code == 0, f"the operator did not exit cleanly on SIGTERM ({code}):\n{operator.tail()}"
    # It named the Secrets in the pod template...
    assert dep is not None
    volumes = {v["name"]: v.get("secret", {}).get("secretName") for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-keys"] == "chat-api-keys" and volumes["jwt"] == "chat-jwt", volumes
    env_refs = [e["valueFrom"]["secretKeyRef"] for c in dep["spec"]["template"]["spec"]["containers"]
                for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert {"name": "chat-hf-token", "key": "token"} in env_refs, env_refs
    text = "\n".join(operator.logs().values())
    assert "DEBUG" in text and "default/chat" in text, operator.tail()  # its logs were taken at debug level
    # ... but never asked the API for one (only our kubectl did), and nothing planted, nor its
    # base64, is in its logs.
    reads = [f"{getattr(r.method, 'value', r.method)} {r.url.path} ({r.headers.get('User-Agent')})"
             for r in requests
             if "/secrets" in r.url.path and not str(r.headers.get("User-Agent", "")).startswith("kubectl")]
    found = leaks(operator.logs(), p.values())
    problems = ["the operator requested Secrets:", *reads] * bool(reads)
    problems += ["planted values in its logs:", *found] * bool(found)
    assert requests and not problems, "\n".join(problems)
