"""Prometheus metrics of the server, on a registry of its own (so two servers in one process never clash).

Counters and histograms are updated by the engine loop thread as outputs arrive (prometheus_client is
thread-safe); the gauges mirror the engine's scheduler statistics, refreshed after every step.

    tritonforge_requests_total{finish_reason}        engine requests finished (stop, length, abort, timeout, error)
    tritonforge_http_requests_total{route,status}    HTTP requests answered
    tritonforge_rejected_requests_total{reason}      requests refused before reaching the engine (queue_full, ...)
    tritonforge_prompt_tokens_total / _generation_tokens_total
    tritonforge_time_to_first_token_seconds          histogram: submit -> first output token
    tritonforge_inter_token_latency_seconds          histogram: gap between consecutive output tokens
    tritonforge_e2e_request_latency_seconds          histogram: submit -> finish
    tritonforge_num_requests_running / _waiting      gauges (waiting = the queue depth)
    tritonforge_kv_cache_usage                       gauge in [0, 1]; _kv_cache_free_blocks, _kv_cache_total_blocks
    tritonforge_preemptions_total                    sequences preempted (recomputed) for lack of KV blocks
    tritonforge_engine_alive                         1 while the engine loop runs, 0 once it has died
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
                    2.5, 5.0, 10.0, 20.0, 40.0, 80.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = "tritonforge_"
        self.requests = Counter(p + "requests", "engine requests finished", ["finish_reason"], registry=r)
        self.http_requests = Counter(p + "http_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.rejected = Counter(p + "rejected_requests", "requests refused before the engine", ["reason"], registry=r)
        self.prompt_tokens = Counter(p + "prompt_tokens", "prompt tokens submitted", registry=r)
        self.generation_tokens = Counter(p + "generation_tokens", "tokens generated", registry=r)
        self.ttft = Histogram(p + "time_to_first_token_seconds", "submit to first output token",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram(p + "inter_token_latency_seconds", "gap between output tokens",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram(p + "e2e_request_latency_seconds", "submit to finish", buckets=_LATENCY_BUCKETS,
                             registry=r)
        self.running = Gauge(p + "num_requests_running", "sequences being generated", registry=r)
        self.waiting = Gauge(p + "num_requests_waiting", "sequences queued for a slot", registry=r)
        self.kv_usage = Gauge(p + "kv_cache_usage", "fraction of KV-cache blocks in use", registry=r)
        self.kv_free = Gauge(p + "kv_cache_free_blocks", "free KV-cache blocks", registry=r)
        self.kv_total = Gauge(p + "kv_cache_total_blocks", "KV-cache blocks", registry=r)
        self.preemptions = Counter(p + "preemptions", "sequences preempted for lack of KV blocks", registry=r)
        self.alive = Gauge(p + "engine_alive", "1 while the engine loop runs", registry=r)
        self._preemptions_seen = 0

    def observe_stats(self, stats: dict) -> None:
        """Mirror the scheduler's statistics (called by the engine loop thread)."""
        self.running.set(stats.get("num_running", 0))
        self.waiting.set(stats.get("num_waiting", 0))
        self.kv_usage.set(stats.get("kv_usage", 0.0))
        self.kv_free.set(stats.get("kv_free_blocks", 0))
        self.kv_total.set(stats.get("kv_total_blocks", 0))
        preemptions = int(stats.get("num_preemptions", 0))
        if preemptions > self._preemptions_seen:
            self.preemptions.inc(preemptions - self._preemptions_seen)
            self._preemptions_seen = preemptions

    def render(self) -> bytes:
        return generate_latest(self.registry)
