"""Wire contracts of a real node process serving the shipped demo model."""

from __future__ import annotations

import re

import aiohttp
from helpers import NodeProcess, scrape

from geogate.shared.schemas import LABELS

ELEMENT_TYPES = {
    "prov", "city", "district", "town", "community", "road", "roadno", "poi", "subpoi",
    "houseno", "cellno", "floorno", "roomno", "assist", "devzone", "village_group", "intersection",
    "distance", "redundant", "others",
}


async def test_similarity(demo_node: NodeProcess, http: aiohttp.ClientSession) -> None:
    pairs = [
        ["浙江省杭州市余杭区文一西路969号", "杭州余杭文一西路969号"],
        ["上海市黄浦区南京东路100号", "北京市海淀区中关村大街27号"],
        ["杭州市文一西路969号", "杭州市文一西路968号"],
        ["杭州市文一西路969号", "杭州市文一西路"],
    ]
    async with http.post(demo_node.url + "/v1/similarity", json={"pairs": pairs}, headers={"X-Request-ID": "abc-1"}) as resp:
        assert resp.status == 200
        body = await resp.json()
        version = resp.headers["X-Model-Version"]
        assert (resp.headers["X-Color"], resp.headers["X-Region"]) == ("green", "cn-east")
        assert resp.headers["X-Request-ID"] == "abc-1"
    assert (body["model_version"], body["color"], body["region"]) == (version, "green", "cn-east")
    assert re.fullmatch(r"[A-Za-z0-9._]+-[A-Za-z0-9._]+-[A-Za-z0-9._]+", version)
    assert len(body["results"]) == 4
    for result in body["results"]:
        assert set(result) == {"score", "label"}
        assert 0.0 <= result["score"] <= 1.0 and result["label"] in LABELS
    # Hand-written pairs, none from the generator: the same place written two ways,
    # another city, another road number, a coarser granularity of the same road.
    labels = [r["label"] for r in body["results"]]
    assert labels == ["exact_match", "not_match", "not_match", "partial_match"]
    assert body["results"][0]["score"] > 0.5 > max(r["score"] for r in body["results"][1:])


async def test_parse(demo_node: NodeProcess, http: aiohttp.ClientSession) -> None:
    addresses = ["浙江省杭州市余杭区五常街道文一西路969号", "上海市黄浦区南京东路100号"]
    async with http.post(demo_node.url + "/v1/parse", json={"addresses": addresses}) as resp:
        assert resp.status == 200
        body = await resp.json()
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])  # generated
    assert body["color"] == "green" and len(body["results"]) == 2
    for address, result in zip(addresses, body["results"]):
        assert result["elements"], f"no elements found in {address}"
        for el in result["elements"]:
            assert el["type"] in ELEMENT_TYPES
            assert address[el["start"] : el["end"]] == el["text"]
    first = {(e["type"], e["text"]) for e in body["results"][0]["elements"]}
    assert ("prov", "浙江省") in first and ("city", "杭州市") in first


async def test_compat_routes(demo_node: NodeProcess, http: aiohttp.ClientSession) -> None:
    async with http.post(demo_node.url + "/match", json={"address1": "杭州市文一西路969号", "address2": "杭州文一西路969号"}) as resp:
        assert resp.status == 200
        body = await resp.json()
        assert set(body) == {"similarity"} and 0.0 <= body["similarity"] <= 1.0
        assert resp.headers["X-Model-Version"]
    async with http.post(demo_node.url + "/parse", json={"address": "上海市黄浦区南京东路100号"}) as resp:
        assert resp.status == 200
        body = await resp.json()
        assert set(body) == {"elements"} and body["elements"][0]["type"] in ELEMENT_TYPES


async def test_health_and_info(demo_node: NodeProcess, http: aiohttp.ClientSession) -> None:
    assert (await demo_node.get(http, "/health/live"))[0] == 200
    status, ready = await demo_node.get(http, "/health/ready")
    assert status == 200
    assert ready["status"] == "ready" and ready["color"] == "green" and ready["region"] == "cn-east"
    assert ready["device"] == "cpu" and ready["queue_depth"] == 0 and ready["demo"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", str(ready["checksum"]))
    assert (await demo_node.get(http, "/health"))[1]["model_version"] == ready["model_version"]
    status, info = await demo_node.get(http, "/info")
    assert status == 200 and info["demo"] is True and info["tasks"] == ["similarity", "parse"]
    assert info["checksum"] == ready["checksum"] and info["limits"]["max_batch"] == 32  # type: ignore[index]
    assert "DEMO" in str(info["metadata"]).upper()


async def test_metrics(demo_node: NodeProcess, http: aiohttp.ClientSession) -> None:
    async with http.post(demo_node.url + "/v1/parse", json={"addresses": ["杭州市西湖区"]}) as resp:
        assert resp.status == 200
        version = resp.headers["X-Model-Version"]
    m = await scrape(http, demo_node.url)
    assert m['geogate_node_requests_total{route="/v1/parse",status="200"}'] >= 1
    assert m['geogate_node_batch_size_count{task="parse"}'] >= 1
    assert m['geogate_node_inference_seconds_count{task="parse"}'] >= 1
    assert 'geogate_node_queue_depth{task="parse"}' in m
    assert m["geogate_node_ready"] == 1
    info = [k for k in m if k.startswith("geogate_node_model_info{")]
    assert len(info) == 1 and f'model_version="{version}"' in info[0]
    assert 'color="green"' in info[0] and 'region="cn-east"' in info[0] and 'device="cpu"' in info[0]
