"""``geogate geoip build``: an offline country database from Debian's ``tor-geoipdb``.

Debian's ``tor-geoipdb`` package ships the IPFire Location database's country ranges in
Tor's text format (``/usr/share/tor/geoip``: ``first,last,CC`` as IPv4 integers;
``geoip6``: ``first,last,CC`` as IPv6 addresses). This converts them into a MaxMind-format
Country database (``.mmdb``) that the gateway reads like GeoLite2-Country, so a real
default works with no account and no download at run time.

Data: IPFire Location, https://location.ipfire.org/, licensed CC BY-SA 4.0; the built
file's metadata says so, and so must anything that redistributes it.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ATTRIBUTION", "BuildStats", "build", "default_output", "read_tor_ranges"]

ATTRIBUTION = "IPFire Location data (https://location.ipfire.org/), CC BY-SA 4.0, via Debian's tor-geoipdb"
TOR_DIR = Path("/usr/share/tor")


@dataclass(frozen=True)
class BuildStats:
    ranges: int
    countries: int
    networks: int
    seconds: float
    output: Path


def default_output() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "geogate" / "country.mmdb"


def read_tor_ranges(path: Path) -> Iterator[tuple[int, int, str]]:
    """``(first, last, country)`` from a Tor geoip file (IPv4 integers or IPv6 addresses);
    ranges without a country (``??``) are skipped."""
    with path.open(encoding="ascii", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                first, last, country = line.split(",")
                lo = int(first) if first.isdigit() else int(ipaddress.ip_address(first))
                hi = int(last) if last.isdigit() else int(ipaddress.ip_address(last))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a Tor geoip line: {line[:80]!r}") from exc
            if len(country) == 2 and country.isalpha() and lo <= hi:
                yield lo, hi, country.upper()


def build(v4: Path, v6: Path | None, output: Path, progress: Callable[[str], None] = lambda _: None) -> BuildStats:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    started = time.monotonic()
    by_country: dict[str, list[str]] = defaultdict(list)
    ranges = 0
    for path, address in ((v4, ipaddress.IPv4Address), (v6, ipaddress.IPv6Address)):
        if path is None:
            continue
        for lo, hi, country in read_tor_ranges(path):
            cidrs = ipaddress.summarize_address_range(address(lo), address(hi))
            by_country[country].extend(str(n) for n in cidrs)
            ranges += 1
        progress(f"read {ranges} ranges from {path}")
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", languages=["en"],
                        description={"en": f"geogate country database from {ATTRIBUTION}"}, ipv4_compatible=True)
    networks = 0
    for i, (country, country_ranges) in enumerate(sorted(by_country.items()), 1):
        ip_set = IPSet(country_ranges)  # built in one go: adding one by one re-merges every time
        networks += len(country_ranges)
        writer.insert_network(ip_set, {"country": {"iso_code": country}, "registered_country": {"iso_code": country}})
        if i % 25 == 0 or i == len(by_country):
            progress(f"{i}/{len(by_country)} countries, {networks} networks")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".partial")
    writer.to_db_file(str(partial))
    partial.replace(output)  # readers never see a half-written file
    return BuildStats(ranges, len(by_country), networks, time.monotonic() - started, output)
