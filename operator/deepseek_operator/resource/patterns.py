"""The resource's identity (group, version, kind) and the string grammars its fields are checked against.

Regexes here are written once for three readers: pydantic's `pattern=` (Python `re`), the CRD's
OpenAPI `pattern` and the CEL rules of tools/crd_rules.py (RE2, on the apiserver). Pure constants and
pure checks (`image_reference_ok`, `ip_networks`, `checked_image`); no models.
"""

from __future__ import annotations

import ipaddress
import re
import warnings

from deepseek_operator.wire import DNS_SUBDOMAIN, LABEL_NAME

GROUP = "deepseek.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DeepSeekDeployment"
PLURAL = "deepseekdeployments"
PRIMARY = "primary"

EXTENDED_RESOURCE = f"^{DNS_SUBDOMAIN}/{LABEL_NAME}$"  # domain-prefixed, e.g. nvidia.com/gpu
INGRESS_HOST = f"^(?:[*][.])?{DNS_SUBDOMAIN}$"
# An HTTP path both an Ingress (Prefix) and an HTTPRoute (PathPrefix) hold: RFC 3986 path characters
# or %-escapes; INGRESS_PATH_BAD lists the sequences both refuse (dot segments, '//', an escaped '/').
INGRESS_PATH = "^/(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})*$"
INGRESS_PATH_BAD = "//|/[.][.]?/|%2[fF]|/[.][.]?$"
MAX_SELECTOR_LABELS = 64
DURATION = r"^[0-9]+(ms|s|m|h)$"
# A parameter count: digits with an optional K, M, B (billion) or T suffix, e.g. 671B, 7.6B, 8430400.
PARAMETER_COUNT = r"^[0-9]+(\.[0-9]+)?[KMBT]?$"
PROMETHEUSLABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
# An OCI image reference as the distribution reference grammar has it (what `docker pull` accepts):
# [registry[:port]/]repository[:tag][@algorithm:hex]. The registry is a host name or a bracketed IPv6
# address ([::1]:5000), the port 1-65535; repository path components are lowercase, separated by '.',
# '_', '__' or dashes; tags are at most 128 characters; the name (registry and repository) at most 255
# (IMAGE_NAME_FITS). No backslashes ('[.]', '[[]', not '\.'): the same text is a CEL string literal in
# tools/crd_rules.py, evaluated by RE2 on the apiserver and by google-re2 in the sandbox;
# `checked_image` below uses fullmatch (Python's `$` would also match before a trailing newline,
# RE2's does not).
_DOMAIN_PART = "[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_IPV6_HOST = "[[][a-fA-F0-9:]+[]]"
_PORT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PATH_PART = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF = (
    f"^(?:(?:{_DOMAIN_PART}(?:[.]{_DOMAIN_PART})*|{_IPV6_HOST})(?::{_PORT})?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    "(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?"
    "(?:@[a-zA-Z][a-zA-Z0-9]*(?:[-_+.][a-zA-Z][a-zA-Z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# The OCI name limit, for a string IMAGE_REF accepts: the name ends at the '@' of a digest or at the
# ':' of a tag (the only ':' with no '/' after it), so it is at most 255 characters when the whole
# reference is, or when one of those comes within its first 256 characters. A regex, not a
# substring: RE2 has no lookahead, CEL no capture groups.
IMAGE_NAME_MAX = 255
IMAGE_NAME_FITS = f"^[^@]{{0,{IMAGE_NAME_MAX}}}(?:@|:[^/@]*(?:@|$))"
IMAGE_REF_HELP = ("[registry[:port]/]repository[:tag][@sha256:<digest>], repository in lowercase, registry and "
                  f"repository at most {IMAGE_NAME_MAX} characters, port 1-65535")
# IP addresses and CIDRs (ipBlock, FORWARDED_ALLOW_IPS); ip_networks() checks what the regexes let through.
_IPV4 = "(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])[.]){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV6 = "[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}"
IP_OR_CIDR = f"^(?:{_IPV4}(?:/(?:3[0-2]|[12]?[0-9]))?|{_IPV6}(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"
CIDR = f"^(?:{_IPV4}/(?:3[0-2]|[12]?[0-9])|{_IPV6}/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
# What rollout.requireDigest asks of every image: pinned by a sha256 digest.
DIGEST_PINNED = "@sha256:[0-9a-f]{64}$"
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # Python reads '[[]' as a possible nested set; RE2 does not
    _IMAGE_RE = re.compile(IMAGE_REF)


def image_reference_ok(image: str) -> bool:
    """The CEL rule on an image, in Python: the grammar and the name limit."""
    return bool(_IMAGE_RE.fullmatch(image)) and (
        len(image) <= IMAGE_NAME_MAX or re.match(IMAGE_NAME_FITS, image) is not None)


def ip_networks(values: list[str] | None, *, strict: bool) -> list[str] | None:
    """Refuse what the patterns let through but is no address (`1::2::3`); strict: no host bits set."""
    for value in values or []:
        try:
            ipaddress.ip_network(value, strict=strict)
        except ValueError as exc:
            raise ValueError(f"{value}: {exc}") from None
    return values


def checked_image(image: str | None) -> str | None:
    """Refuse what no registry could serve: the CRD's CEL rule says the same (tools/crd_rules.py)."""
    if image is not None and not image_reference_ok(image):
        raise ValueError(f"not a valid OCI image reference ({IMAGE_REF_HELP})")
    return image


