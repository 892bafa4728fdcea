"""Which address a request comes from: the TCP peer, unless that peer is a configured proxy.

``X-Forwarded-For`` is a header any client can write. It is believed only when the peer is one
of the trusted proxies (``facesearch serve --trusted-proxy ADDR`` or ``$FACESEARCH_TRUSTED_PROXIES``;
default: none), and then only as far as the chain of trusted hops goes: walking the header from
the right (the hop our proxy appended), the first address that is not itself a trusted proxy is
the client. Whatever a client wrote further left is ignored. The login throttle and the audit
log use this address.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable

from starlette.requests import Request

TRUSTED_PROXIES_ENV = "FACESEARCH_TRUSTED_PROXIES"


class TrustedProxies:
    """Addresses and networks (``10.0.0.1``, ``10.0.0.0/8``, ``::1``) whose forwarded-for we believe."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: set[str] = set()  # non-IP peers (e.g. a test client's name): exact match
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry)

    @classmethod
    def from_env(cls) -> TrustedProxies:
        return cls(os.environ.get(TRUSTED_PROXIES_ENV, "").split(","))

    def __bool__(self) -> bool:
        return bool(self.networks or self.names)

    def trusts(self, address: str) -> bool:
        if address in self.names:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client address for a request from ``peer`` carrying this ``X-Forwarded-For``."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        client = peer
        for hop in reversed([h.strip() for h in forwarded_for.split(",")[-32:]]):
            try:
                hop = str(ipaddress.ip_address(hop))
            except ValueError:
                return client  # not an address: stop at the last hop a trusted proxy vouched for
            client = hop
            if not self.trusts(hop):
                return hop
        return client


def request_client(request: Request, proxies: TrustedProxies) -> tuple[str, str]:
    """(client address, TCP peer) of ``request``."""
    peer = request.client.host if request.client else "unknown"
    return proxies.client(peer, request.headers.get("x-forwarded-for")), peer
