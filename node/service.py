"""The scoring node's state: the model, one batcher per task, and the lifecycle
loading -> warming -> ready -> draining (or failed).

The model loads on the device thread after the HTTP server is up, so that
``/health/live`` answers at once while ``/health/ready`` stays 503 until the model is
loaded and warmed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from geogate.node.backends import load_model
from geogate.node.backends.base import LoadedModel, LoadSpec, Pair, Task
from geogate.node.batcher import Batcher
from geogate.node.config import NodeConfig
from geogate.node.demo import DEMO_MODELS
from geogate.node.faults import Faults
from geogate.node.identity import ChecksumMismatch
from geogate.node.metrics import NodeMetrics
from geogate.shared.errors import ModelError, Unavailable
from geogate.shared.schemas import ParseResult, SimilarityResult

__all__ = ["NodeService", "State"]

log = logging.getLogger("geogate.node")

State = Literal["loading", "warming", "ready", "draining", "failed"]

# Warm-up inputs: real-looking addresses, short and long, so the first client call does
# not pay for lazy initialisation (allocator, kernels, tokenizer caches).
_WARMUP_ADDRESSES = (
    "浙江省杭州市余杭区五常街道文一西路969号",
    "杭州余杭文一西路969号阿里巴巴西溪园区3号楼5层",
    "上海市黄浦区南京东路100号",
    "北京市海淀区中关村大街27号",
)


class NodeService:
    def __init__(self, config: NodeConfig, metrics: NodeMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.faults = Faults(
            delay_ms=config.fault_delay_ms,
            hold_load_file=config.fault_hold_load_file,
            hold_inference_file=config.fault_hold_inference_file,
            fail_file=config.fault_fail_file,
            slow_file=config.fault_slow_file,
        )
        self.state: State = "loading"
        self.error: str | None = None
        self.model: LoadedModel | None = None
        self._batchers: dict[Task, Batcher[Any, Any]] = {}
        # One device thread: forward passes never overlap on the device. One preparation
        # thread: tokenization of the next batch overlaps the current forward pass (and
        # fast tokenizers must not be used from two threads at once).
        self._device_pool = ThreadPoolExecutor(1, thread_name_prefix="geogate-device")
        self._prepare_pool = ThreadPoolExecutor(1, thread_name_prefix="geogate-prepare")

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def queue_depth(self) -> int:
        return sum(b.queue_depth for b in self._batchers.values())

    async def start(self) -> None:
        """Load, verify, warm up; raises on failure (the process then exits non-zero)."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        demo = DEMO_MODELS.get(cfg.model)  # a shipped demo model, by name
        spec = LoadSpec(
            model=str(demo) if demo else cfg.model, device=cfg.device, dtype=cfg.dtype,
            model_version=cfg.model_version, max_seq_len=cfg.max_seq_len, cpu_threads=cfg.cpu_threads,
            demo=demo is not None,
        )
        try:
            if self.faults.hold_load_file:
                await loop.run_in_executor(self._device_pool, self.faults.before_load)
            log.info("loading model %s (backend %s, %s, %s)", cfg.model, cfg.backend, cfg.device, cfg.dtype)
            model = await loop.run_in_executor(self._device_pool, load_model, spec, cfg.backend)
            if cfg.expect_sha256 and model.checksum != cfg.expect_sha256.strip().lower():
                raise ChecksumMismatch(
                    f"weights checksum {model.checksum} differs from --expect-sha256 {cfg.expect_sha256}"
                )
            self.model = model
            self.state = "warming"
            if cfg.warmup:
                await self._warm_up(model)
        except BaseException as exc:
            self.state = "failed"
            self.error = str(exc)
            raise
        for task in model.tasks:
            runner = model.similarity if task == "similarity" else model.parse
            batcher: Batcher[Any, Any] = Batcher(
                task,
                runner,  # type: ignore[arg-type]
                max_batch_size=cfg.max_batch_size,
                max_wait_s=cfg.max_wait_ms / 1000,
                max_queue=cfg.max_queue,
                prepare_executor=self._prepare_pool,
                device_executor=self._device_pool,
                observer=self.metrics,
                before_run=self.faults.before_inference if self.faults.active else None,
                length=_pair_length if task == "similarity" else len,
            )
            batcher.start()
            self._batchers[task] = batcher
        self.metrics.model_info.labels(
            model.model_version, model.checksum, cfg.color, cfg.region, model.device, model.dtype, model.backend
        ).set(1)
        self.state = "ready"
        self.metrics.ready.set(1)
        log.info(
            "ready: %s (sha256 %s) serving %s%s",
            model.model_version, model.checksum[:16], ", ".join(model.tasks), " [DEMO MODEL]" if model.demo else "",
        )

    async def _warm_up(self, model: LoadedModel) -> None:
        """Run the warm-up inputs straight through the runners (not the batchers, so the
        batch metrics show client traffic only), at size 1 and at a full batch."""
        loop = asyncio.get_running_loop()
        n = self.config.max_batch_size
        texts = list(_WARMUP_ADDRESSES)
        full = (texts * (n // len(texts) + 1))[:n]
        work: list[tuple[Any, Sequence[Any]]] = []
        if model.similarity is not None:
            pairs = list(zip(full, reversed(full)))
            work += [(model.similarity, pairs[:1]), (model.similarity, pairs)]
        if model.parse is not None:
            work += [(model.parse, full[:1]), (model.parse, full)]
        for runner, items in work:
            prepared = await loop.run_in_executor(self._prepare_pool, runner.prepare, items)
            await loop.run_in_executor(self._device_pool, runner.run, prepared)

    async def similarity(self, pairs: Sequence[Pair], deadline: float) -> list[SimilarityResult]:
        results: list[SimilarityResult] = await self._batcher("similarity").submit(pairs, deadline)
        return results

    async def parse(self, addresses: Sequence[str], deadline: float) -> list[ParseResult]:
        results: list[ParseResult] = await self._batcher("parse").submit(addresses, deadline)
        return results

    def _batcher(self, task: Task) -> Batcher[Any, Any]:
        if self.state != "ready":
            raise Unavailable(f"the node is {self.state}", retry_after_s=1)
        if self.faults.failing():
            raise ModelError(f"FAULT: failing while {self.faults.fail_file} exists")
        batcher = self._batchers.get(task)
        if batcher is None:
            raise Unavailable(f"this node serves no {task} model")
        return batcher

    async def drain(self, timeout_s: float) -> bool:
        """Stop taking work, finish what was accepted within ``timeout_s``."""
        if self.state in ("ready", "warming"):
            self.state = "draining"
        self.metrics.ready.set(0)
        results = await asyncio.gather(*(b.drain(timeout_s) for b in self._batchers.values()))
        return all(results)

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._batchers.values()))
        self._device_pool.shutdown(wait=False, cancel_futures=True)
        self._prepare_pool.shutdown(wait=False, cancel_futures=True)

    def gpu_memory(self) -> dict[str, int]:
        if self.model is None or not self.model.device.startswith("cuda"):
            return {}
        import torch

        return {
            "allocated": int(torch.cuda.memory_allocated(self.model.device)),
            "reserved": int(torch.cuda.memory_reserved(self.model.device)),
        }


def _pair_length(pair: Pair) -> int:
    return len(pair[0]) + len(pair[1])
