"""Benchmark: the same model served with dynamic batching and with max_batch_size=1.

Run on demand (not in CI):

    .venv/bin/python tests/bench/node_batching.py                       # CPU, demo model
    .venv/bin/python tests/bench/node_batching.py --device cuda --dtype fp16 --model base

Both nodes run in this one run, one after the other and then again (A B A B), each
driven by ``--clients`` concurrent clients from a separate load process over loopback;
the script prints pairs/s both ways and their ratio. ``--model base`` builds a
BERT-base-sized model with random weights (hidden 768, 12 layers, vocab 21128) in a
temporary directory: what an MGeo-base node costs, for timing only. ``--load-procs``
spreads the clients over several processes (one Python client tops out before a GPU
node does), ``--ceiling`` also times the model alone in full batches without HTTP,
``--node-arg=--cpu-threads=2`` passes a flag to both nodes, and ``--json FILE`` also
writes the figures to FILE (for ``tests/bench/run_all.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

from helpers import NodeProcess

ADDRESSES = [
    "浙江省杭州市余杭区五常街道文一西路969号",
    "杭州余杭文一西路969号阿里巴巴西溪园区",
    "上海市黄浦区南京东路100号",
    "北京市海淀区中关村大街27号中关村大厦5层",
    "广东省深圳市南山区科技园南区深南大道10000号",
    "江苏省南京市鼓楼区中山北路30号",
]


def build_base_model(out: Path) -> Path:
    """A BERT-base-sized similarity model with random weights, for timing only."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from geogate.node.demo import DEMO_MODEL_DIR

    # The demo's character tokenizer: its ids are a subset of the 21128 the model has.
    model_dir = out / "similarity"
    AutoTokenizer.from_pretrained(DEMO_MODEL_DIR / "similarity").save_pretrained(model_dir)
    labels = ["not_match", "partial_match", "exact_match"]
    config = BertConfig(
        vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512, num_labels=3,
        id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)},
    )
    BertForSequenceClassification(config).save_pretrained(model_dir)
    (out / "geogate.json").write_text(json.dumps({"model_version": "bert_base_random-bench-00000000"}))
    return out


# -- the load process --------------------------------------------------------------------

async def _load(url: str, clients: int, seconds: float, pairs: int, max_requests: int) -> dict[str, float]:
    import aiohttp

    body = json.dumps({"pairs": [[ADDRESSES[i % 6], ADDRESSES[(i + 1) % 6]] for i in range(pairs)]}).encode()
    done = errors = 0
    stop_at = time.perf_counter() + seconds
    latencies: list[float] = []

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at and done + errors < max_requests:
            t = time.perf_counter()
            async with session.post(url + "/v1/similarity", data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                if resp.status == 200:
                    done += 1
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return {"requests": done, "errors": errors, "seconds": elapsed, "pairs_per_s": done * pairs / elapsed,
            "p99_ms": p99 * 1000}


def run_load(url: str, args: argparse.Namespace) -> dict[str, float]:
    """Drive ``url`` from separate processes, so the clients do not share the node's loop.

    ``--load-procs`` splits the clients over several processes: on a fast GPU one Python
    client process tops out before the node does.
    """
    share = [args.clients // args.load_procs + (i < args.clients % args.load_procs) for i in range(args.load_procs)]
    procs = [
        subprocess.Popen([sys.executable, __file__, "--load", url, "--clients", str(n), "--seconds", str(args.seconds),
                          "--pairs", str(args.pairs)], stdout=subprocess.PIPE, text=True)
        for n in share if n
    ]
    parts = []
    for proc in procs:
        out, _ = proc.communicate(timeout=args.seconds + 120)
        if proc.returncode:
            raise RuntimeError(f"load process exited with {proc.returncode}")
        parts.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "requests": sum(p["requests"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "pairs_per_s": sum(p["pairs_per_s"] for p in parts),
        "p99_ms": max(p["p99_ms"] for p in parts),
    }


def model_ceiling(model: str, args: argparse.Namespace) -> float:
    """Pairs/s of the model alone (tokenize + forward, one full batch at a time, no HTTP).

    The upper bound the node's batched figure is measured against.
    """
    from geogate.node.backends import load_model
    from geogate.node.backends.base import LoadSpec

    loaded = load_model(LoadSpec(model=model, device=args.device, dtype=args.dtype), "hf")
    runner = loaded.similarity
    assert runner is not None
    pairs = [(ADDRESSES[i % 6], ADDRESSES[(i + 1) % 6]) for i in range(args.max_batch_size)]
    for _ in range(5):
        runner.run(runner.prepare(pairs))
    batches = 0
    started = time.perf_counter()
    while time.perf_counter() - started < min(args.seconds, 5.0):
        runner.run(runner.prepare(pairs))  # returns host lists, so each call waits for the device
        batches += 1
    return batches * len(pairs) / (time.perf_counter() - started)


# -- the comparison ----------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--model", default="demo", help="demo, base (random BERT-base), or a model directory")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=1, help="pairs per request")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--node-arg", action="append", default=[], help="extra node flag for both variants")
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds (alternated against drift)")
    parser.add_argument("--only", choices=["batched", "unbatched"], help="run one variant (no ratio)")
    parser.add_argument("--load-procs", type=int, default=1, help="client processes the clients are spread over")
    parser.add_argument("--ceiling", action="store_true", help="also time the model alone, without HTTP")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(_load(args.load, args.clients, args.seconds, args.pairs, 10_000_000))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_base_model(Path(tmp) / "base")) if args.model == "base" else args.model
        common = ["--model", model, "--device", args.device, "--dtype", args.dtype, "--max-wait-ms", "5",
                  "--max-queue", "100000", "--log-level", "warning", *args.node_arg]
        variants = {"batched": ["--max-batch-size", str(args.max_batch_size)], "unbatched": ["--max-batch-size", "1"]}
        if args.only:
            variants = {args.only: variants[args.only]}
        totals: dict[str, list[float]] = {name: [] for name in variants}
        rounds: list[dict[str, object]] = []
        for rnd in range(args.rounds):
            for name, extra in variants.items():
                node = NodeProcess(Path(tmp), *common, *extra)
                try:
                    asyncio.run(node.wait_ready())
                    result = run_load(node.url, args)
                finally:
                    node.stop()
                totals[name].append(result["pairs_per_s"])
                rounds.append({"round": rnd + 1, "variant": name, **result})
                print(f"round {rnd + 1} {name:9s}: {result['pairs_per_s']:9.1f} pairs/s  "
                      f"p99 {result['p99_ms']:7.1f} ms  ({int(result['requests'])} ok, {int(result['errors'])} errors)",
                      flush=True)
        mean = {name: sum(v) / len(v) for name, v in totals.items()}
        print(f"\nmodel={args.model} device={args.device} dtype={args.dtype} clients={args.clients} "
              f"(in {args.load_procs} processes) pairs/request={args.pairs}")
        if "batched" in mean:
            print(f"batched (max_batch_size={args.max_batch_size}): {mean['batched']:.1f} pairs/s")
        if "unbatched" in mean:
            print(f"unbatched (max_batch_size=1):  {mean['unbatched']:.1f} pairs/s")
        if len(mean) == 2:
            print(f"ratio: {mean['batched'] / mean['unbatched']:.2f}x")
        ceiling = model_ceiling(model, args) if args.ceiling else None
        if ceiling is not None:
            print(f"model alone, batches of {args.max_batch_size}, no HTTP: {ceiling:.1f} pairs/s")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "node_batching",
            "settings": {"model": args.model, "device": args.device, "dtype": args.dtype, "clients": args.clients,
                         "load_procs": args.load_procs, "pairs_per_request": args.pairs, "seconds": args.seconds,
                         "rounds": args.rounds, "max_batch_size": args.max_batch_size, "node_args": args.node_arg},
            "rounds": rounds,
            "pairs_per_s": mean,
            "ratio": mean["batched"] / mean["unbatched"] if len(mean) == 2 else None,
            "ceiling_pairs_per_s": ceiling,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
