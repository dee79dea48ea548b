"""Client IP -> country -> home region.

The client is the socket peer, unless the peer is a trusted proxy: then the right-most
``X-Forwarded-For`` entry that is not itself a trusted proxy (entries left of it can be
written by anyone). A trusted CDN's country header, when configured and sent by a
trusted peer, wins over the database. Unknown, private and unparsable addresses get the
default region.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geogate.shared.networks import IPAddress, IPNetwork

__all__ = ["ClientGeo", "GeoResolver"]

log = logging.getLogger("geogate.gateway.geo")



@dataclass(frozen=True, slots=True)
class ClientGeo:
    ip: str | None
    country: str | None
    region: str
    source: str  # "geoip", "cdn-header", "default"


@functools.lru_cache(maxsize=65_536)
def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:1.2.3.4 is looked up as 1.2.3.4
    return ip


class GeoResolver:
    def __init__(
        self,
        *,
        db_path: str | None,
        countries: dict[str, str],
        default_region: str,
        trusted_proxies: tuple[IPNetwork, ...] = (),
        cdn_country_header: str | None = None,
    ) -> None:
        self.countries = countries
        self.default_region = default_region
        self.trusted = trusted_proxies
        self.cdn_header = cdn_country_header
        self._trust_cache: dict[IPAddress, bool] = {}  # the same few proxies ask every time
        self._reader: Any = None
        self._city = False
        if db_path:
            import geoip2.database

            self._reader = geoip2.database.Reader(str(Path(db_path)))
            # .country() on a City database raises TypeError: ask the database what it is.
            self._city = "City" in self._reader.metadata().database_type

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def _trusted(self, ip: IPAddress | None) -> bool:
        if ip is None or not self.trusted:
            return False
        found = self._trust_cache.get(ip)
        if found is None:
            if len(self._trust_cache) > 65_536:
                self._trust_cache.clear()
            found = self._trust_cache[ip] = any(ip in net for net in self.trusted)
        return found

    def client_ip(self, peer: str | None, forwarded_for: list[str]) -> IPAddress | None:
        ip = _ip(peer) if peer else None
        if not self._trusted(ip):
            return ip  # a header from an untrusted peer is ignored
        hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            hop_ip = _ip(hop)
            if hop_ip is None:
                return ip  # garbage in the chain: stop at the last address we trust
            if not self._trusted(hop_ip):
                return hop_ip
            ip = hop_ip
        return ip

    def country(self, ip: IPAddress | None) -> str | None:
        if ip is None or self._reader is None or not ip.is_global:
            return None
        import geoip2.errors

        try:
            found = self._reader.city(str(ip)) if self._city else self._reader.country(str(ip))
        except (geoip2.errors.AddressNotFoundError, ValueError):
            return None
        code: str | None = found.country.iso_code or found.registered_country.iso_code
        return code

    def locate(self, ip: IPAddress | None) -> tuple[str | None, str, str]:
        """(country, home region, "geoip" or "default") of an address, headers aside."""
        country = self.country(ip)
        if country in self.countries:
            return country, self.countries[country], "geoip"
        return country, self.default_region, "default"

    def resolve(self, peer: str | None, headers: Any) -> ClientGeo:
        ip = self.client_ip(peer, headers.getall("X-Forwarded-For", []))
        if self.cdn_header and self._trusted(_ip(peer) if peer else None):
            code = (headers.get(self.cdn_header) or "").strip().upper()
            if code in self.countries:
                return ClientGeo(str(ip) if ip else None, code, self.countries[code], "cdn-header")
        country, region, how = self.locate(ip)
        return ClientGeo(str(ip) if ip else None, country, region, how)
