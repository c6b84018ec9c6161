"""Which requests may change server policy for themselves (repetition_policy_override).

A request is trusted when:

- the server has an API key: the auth middleware refused everyone else, so any
  request that reaches a route carries the key;
- there is no key but the operator passed ``--trust-requests-when-auth-disabled``;
- there is no key, the client connects from loopback and the server listens only
  on loopback: nobody else can reach it.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from vllm_mlx.api.context import ServingContext
from vllm_mlx.config import RepetitionPolicy

log = logging.getLogger(__name__)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or "localhost") names this machine only."""
    if not host:
        return False  # unknown client, or a bind on every interface
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def is_trusted(
    client_host: str | None, bind_host: str, api_key_set: bool, trust_when_no_auth: bool
) -> bool:
    """The trust rule of the module docstring."""
    if api_key_set or trust_when_no_auth:
        return True
    return is_loopback(client_host) and is_loopback(bind_host)


@dataclass(frozen=True)
class RepetitionDecision:
    """The request's loop-detector mode, and what became of its override."""

    mode: RepetitionPolicy
    override_accepted: bool | None = None  # None: the request sent no override


def repetition_mode(
    ctx: ServingContext, override: str | None, client_host: str | None, request_id: str
) -> RepetitionDecision:
    """A trusted override, else the server's mode; overrides are counted and refusals logged."""
    policy = ctx.policy
    if override is None:
        return RepetitionDecision(policy.repetition_policy)
    trusted = is_trusted(
        client_host, ctx.bind_host, bool(policy.api_key), policy.trust_requests_when_auth_disabled
    )
    if not trusted:
        ctx.repetition_overrides.denied += 1
        log.info(
            "request %s: repetition_policy_override=%s ignored: client %s is not trusted",
            request_id,
            override,
            client_host or "unknown",
        )
        return RepetitionDecision(policy.repetition_policy, override_accepted=False)
    ctx.repetition_overrides.accepted += 1
    return RepetitionDecision(RepetitionPolicy(override), override_accepted=True)
