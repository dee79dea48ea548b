"""Self-registered nodes are limited to plain IP addresses in the deployment's networks
(no request forgery through a node URL someone wrote into the store)."""

from __future__ import annotations

import pytest

from geogate.gateway.routing.topology import refuse_node_url
from geogate.shared.networks import parse_networks

NETWORKS = parse_networks("127.0.0.0/8,::1/128,10.0.0.0/8")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8081", "https://10.2.3.4:8443", "http://[::1]:9000/"])
def test_addresses_in_the_networks_are_accepted(url: str) -> None:
    assert refuse_node_url(url, NETWORKS) == ""


@pytest.mark.parametrize(("url", "why"), [
    ("http://169.254.169.254:80", "outside node_networks"),  # a cloud metadata service
    ("http://8.8.8.8:80", "outside node_networks"),
    ("http://localhost:8081", "not an IP address"),
    ("http://internal.example:8081", "not an IP address"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://127.0.0.1:70", "scheme"),
    ("http://user:pw@127.0.0.1:8081", "nothing else"),
    ("http://127.0.0.1:8081/admin?x=1", "nothing else"),
    ("http://127.0.0.1", "no port"),
    ("http://127.0.0.1:99999", "bad port"),
])
def test_anything_else_is_refused(url: str, why: str) -> None:
    assert why in refuse_node_url(url, NETWORKS)
