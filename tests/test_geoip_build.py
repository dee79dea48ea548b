"""``geogate geoip build``: Tor's geoip text format -> a country .mmdb the gateway reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from geogate.gateway.dataplane.geo import GeoResolver
from geogate.gateway.dataplane.geoip_build import read_tor_ranges

TOR_V4 = """# This file has been converted from the IPFire Location database
16777216,16777471,AU
16777472,16778239,CN
3232235520,3232235775,??
1359103392,1359103487,GB
"""
TOR_V6 = """# comment
2001:218::,2001:218:ffff:ffff:ffff:ffff:ffff:ffff,JP
2a02:cfc0::,2a02:cfc0:ffff:ffff:ffff:ffff:ffff:ffff,FR
"""


def test_reads_tor_lines_and_skips_unknown_countries(tmp_path: Path) -> None:
    (tmp_path / "geoip").write_text(TOR_V4)
    assert list(read_tor_ranges(tmp_path / "geoip")) == [
        (16777216, 16777471, "AU"), (16777472, 16778239, "CN"), (1359103392, 1359103487, "GB"),
    ]
    (tmp_path / "bad").write_text("1,2\n")
    with pytest.raises(ValueError, match="bad:1"):
        list(read_tor_ranges(tmp_path / "bad"))


def test_builds_a_database_the_gateway_resolves_with(tmp_path: Path) -> None:
    source = tmp_path / "tor"
    source.mkdir()
    (source / "geoip").write_text(TOR_V4)
    (source / "geoip6").write_text(TOR_V6)
    out = tmp_path / "country.mmdb"
    done = subprocess.run([sys.executable, "-m", "geogate.shared.cli", "geoip", "build", "--source", str(source), "--out",
                           str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "CC BY-SA 4.0" in done.stdout and out.is_file()
    geo = GeoResolver(db_path=str(out), countries={"CN": "cn-east", "GB": "eu-central", "JP": "ap-northeast",
                                                    "FR": "eu-central", "AU": "ap-southeast"},
                      default_region="us-east")
    try:
        for ip, region in (("1.0.1.5", "cn-east"), ("1.0.0.9", "ap-southeast"), ("81.2.69.170", "eu-central"),
                           ("2001:218::1", "ap-northeast"), ("2a02:cfc0::1", "eu-central"),
                           ("::ffff:1.0.1.5", "cn-east"), ("9.9.9.9", "us-east")):
            assert geo.resolve(ip, _NoHeaders()).region == region, ip
    finally:
        geo.close()


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "geogate.shared.cli", "geoip", "build", "--source", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "tor-geoipdb" in done.stderr


class _NoHeaders:
    def getall(self, name: str, default: list[str]) -> list[str]:
        return default

    def get(self, name: str, default: str | None = None) -> str | None:
        return default
