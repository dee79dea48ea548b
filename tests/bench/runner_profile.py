"""Where one batch's time goes: tokenization, host->device copy, forward pass, decode.

Run on demand (not in CI), for example on a GPU:

    python tests/bench/runner_profile.py --model base --device cuda --dtype fp16 --batch 256

Prints milliseconds per stage (median of ``--repeat`` runs) and the pairs/s each stage
alone would allow, so that the slowest stage is the one to work on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]

from node_batching import ADDRESSES, build_base_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    import torch

    from geogate.node.backends import load_model
    from geogate.node.backends.base import LoadSpec

    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_base_model(Path(tmp) / "base")) if args.model == "base" else args.model
        runner = load_model(LoadSpec(model=model, device=args.device, dtype=args.dtype), "hf").similarity
    assert runner is not None
    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    print(f"model={args.model} device={args.device} dtype={args.dtype} threads={torch.get_num_threads()}")
    print(f"{'batch':>5} {'tokens':>6} {'tokenize':>9} {'to dev':>8} {'forward':>8} {'run()':>8} {'pairs/s':>9}"
          + (f" {'graphed':>8}" if cuda else ""))
    for size in args.batch:
        pairs = [(ADDRESSES[i % 6], ADDRESSES[(i + 1) % 6]) for i in range(size)]
        times: dict[str, list[float]] = {"tok": [], "copy": [], "fwd": [], "run": []}
        for i in range(args.repeat + 3):
            t0 = time.perf_counter()
            enc = runner.prepare(pairs)
            t1 = time.perf_counter()
            on_dev = {k: v.to(runner.device) for k, v in enc.items()}
            sync()
            t2 = time.perf_counter()
            with torch.inference_mode():
                runner.model(**on_dev)
            sync()
            t3 = time.perf_counter()
            runner.run(enc)
            t4 = time.perf_counter()
            if i >= 3:
                for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    times[key].append(value * 1000)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{size:5d} {enc['input_ids'].shape[1]:6d} {med['tok']:8.2f}m {med['copy']:7.2f}m {med['fwd']:7.2f}m "
              f"{med['run']:7.2f}m {size / (med['tok'] + med['run']) * 1000:9.0f}"
              + (f" {graphed_forward_ms(runner.model, on_dev, args.repeat):7.2f}m" if cuda else ""))


def graphed_forward_ms(model, inputs, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """The same forward pass replayed from a captured CUDA graph: what launch overhead costs."""
    import torch

    static = {k: v.clone() for k, v in inputs.items()}
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):
            model(**static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        model(**static)
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        graph.replay()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - start) * 1000)
    return statistics.median(out)


if __name__ == "__main__":
    main()
