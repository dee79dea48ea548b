"""Client IP and home region, with MaxMind's test databases (tests/data/geoip)."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict

from geogate.gateway.dataplane.geo import GeoResolver
from geogate.gateway.launcher.plan import TEST_GEOIP_DB
from geogate.gateway.routing.topology import parse_topology
from geogate.shared.config import ConfigError
from geogate.shared.networks import parse_networks

GEOIP = Path(__file__).parent / "data" / "geoip"
# MaxMind's test databases: the Country one ships with the package (geogate up uses it)
DATABASES = {"GeoIP2-Country-Test.mmdb": TEST_GEOIP_DB, "GeoIP2-City-Test.mmdb": GEOIP / "GeoIP2-City-Test.mmdb",
             "GeoLite2-Country-Test.mmdb": GEOIP / "GeoLite2-Country-Test.mmdb"}
COUNTRIES = {"CN": "cn-east", "PH": "ap-southeast", "GB": "eu-central", "SE": "eu-central", "US": "us-east",
             "JP": "ap-southeast", "FR": "eu-central"}


def resolver(db: str = "GeoIP2-Country-Test.mmdb", **kw: object) -> GeoResolver:
    return GeoResolver(db_path=str(DATABASES[db]), countries=COUNTRIES, default_region="us-east",
                       trusted_proxies=parse_networks("127.0.0.0/8, 10.0.0.0/8, ::1/128"), **kw)  # type: ignore[arg-type]


def headers(*xff: str, **extra: str) -> CIMultiDict[str]:
    h: CIMultiDict[str] = CIMultiDict()
    for value in xff:
        h.add("X-Forwarded-For", value)
    for k, v in extra.items():
        h.add(k.replace("_", "-"), v)
    return h


FULL = [("81.2.69.160", "GB", "eu-central"), ("89.160.20.128", "SE", "eu-central"), ("216.160.83.56", "US", "us-east"),
        ("175.16.199.0", "CN", "cn-east"), ("202.196.224.1", "PH", "ap-southeast"),
        ("2001:218::1", "JP", "ap-southeast"), ("2a02:cfc0::1", "FR", "eu-central")]
LITE = [("2.125.160.218", "GB", "eu-central"), ("89.160.20.113", "SE", "eu-central"), ("50.114.0.1", "US", "us-east"),
        ("111.235.160.1", "CN", "cn-east"), ("202.196.224.1", "PH", "ap-southeast")]
CASES = [(db, *case) for db in ("GeoIP2-Country-Test.mmdb", "GeoIP2-City-Test.mmdb") for case in FULL] + [
    ("GeoLite2-Country-Test.mmdb", *case) for case in LITE]


@pytest.mark.parametrize(("db", "ip", "country", "region"), CASES)
def test_countries_map_to_regions_through_a_trusted_proxy(db: str, ip: str, country: str, region: str) -> None:
    geo = resolver(db).resolve("127.0.0.1", headers(ip))
    assert (geo.ip, geo.country, geo.region, geo.source) == (ip, country, region, "geoip")


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    geo = resolver().resolve("81.2.69.160", headers("175.16.199.0"))  # a GB client claims to be CN
    assert (geo.ip, geo.region) == ("81.2.69.160", "eu-central")


def test_right_most_untrusted_hop_is_the_client() -> None:
    r = resolver()
    # "175.16.199.0" could be written by the client; 81.2.69.160 was added by our proxy chain.
    assert r.client_ip("127.0.0.1", ["175.16.199.0, 81.2.69.160, 10.1.2.3"]) == r.client_ip("127.0.0.1", ["81.2.69.160"])
    assert str(r.client_ip("127.0.0.1", ["175.16.199.0", "81.2.69.160"])) == "81.2.69.160"  # repeated headers
    assert str(r.client_ip("127.0.0.1", ["10.0.0.1, 10.0.0.2"])) == "10.0.0.1"  # all trusted: the left-most
    assert str(r.client_ip("127.0.0.1", ["not-an-ip, 81.2.69.160"])) == "81.2.69.160"
    assert str(r.client_ip("127.0.0.1", ["81.2.69.160, garbage"])) == "127.0.0.1"  # stop at what we trust


def test_unknown_private_and_mapped_addresses() -> None:
    r = resolver()
    for ip in ("8.8.8.8", "10.9.8.7", "192.168.1.1", "::1", "fe80::1"):
        assert r.resolve(ip, headers()).region == "us-east"
    mapped = r.resolve("::ffff:175.16.199.0", headers())
    assert (mapped.ip, mapped.region) == ("175.16.199.0", "cn-east")
    assert r.resolve(None, headers()).region == "us-east"


def test_a_cdn_country_header_counts_only_from_a_trusted_peer() -> None:
    r = resolver(cdn_country_header="CF-IPCountry")
    assert r.resolve("127.0.0.1", headers(CF_IPCountry="cn")).source == "cdn-header"
    assert r.resolve("127.0.0.1", headers(CF_IPCountry="cn")).region == "cn-east"
    assert r.resolve("216.160.83.56", headers(CF_IPCountry="CN")).region == "us-east"


def test_without_a_database_everyone_is_in_the_default_region() -> None:
    r = GeoResolver(db_path=None, countries=COUNTRIES, default_region="eu-central")
    assert r.resolve("175.16.199.0", headers()).region == "eu-central"


def test_topology_orders_and_limits_regions() -> None:
    topo = parse_topology({
        "regions": {"cn-east": {"failover": ["cn-north", "eu-central"], "residency": ["cn-*"]},
                    "cn-north": {}, "eu-central": {"failover": ["cn-east"]}},
        "countries": {"cn": "cn-east"},
        "nodes": [{"region": "cn-east", "color": "blue", "url": "http://127.0.0.1:1/"}],
    })
    assert topo.order("cn-east") == ["cn-east", "cn-north", "eu-central"]
    assert topo.region("cn-east").allows("cn-north") and not topo.region("cn-east").allows("eu-central")
    assert topo.region("eu-central").allows("cn-east")
    assert topo.countries == {"CN": "cn-east"} and topo.nodes[0].url == "http://127.0.0.1:1"
    with pytest.raises(ConfigError, match="unknown regions"):
        parse_topology({"regions": {"a": {"failover": ["b"]}}})
    with pytest.raises(ConfigError, match="needs region"):
        parse_topology({"nodes": [{"url": "x"}]})
