#!/usr/bin/env python3
"""load_test.py - N concurrent streaming clients against `sluice serve` for T seconds on loopback
(standard library only: threads + http.client). Bounded in clients, time and tokens per request.

Reports requests/s, generated tokens/s, TTFT and ITL percentiles, errors, and the server's
resident memory at intervals (/proc/PID/status). Exits non-zero on any error, on RSS growth after
the warm-up beyond --rss-slack-mb, or when KV blocks are still held at the end (/metrics).

    tests/serve/load_test.py                      starts build/sluice serve on stories260K itself
    tests/serve/load_test.py --port 8080 --pid N  against a running server
"""
import argparse
import http.client
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, rss_kb, wait_idle  # noqa: E402

PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "The little dog was sad because",
           "One day, a girl named Sue found a box", "Tom liked to play with his red ball", "The sun was hot and"]


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = self.tokens = 0
        self.errors = []
        self.ttft, self.itl = [], []

    def add(self, ttft, itl, tokens):
        with self.lock:
            self.requests += 1
            self.tokens += tokens
            self.ttft.append(ttft)
            self.itl.extend(itl)

    def error(self, what):
        with self.lock:
            self.errors.append(what)


def one_request(port, rng, max_tokens, timeout):
    """One streaming completion; returns (ttft, [itl...], completion tokens)."""
    body = {"prompt": rng.choice(PROMPTS), "max_tokens": rng.randint(max_tokens // 4, max_tokens),
            "temperature": 1.0, "seed": rng.randrange(1 << 30), "stream": True,
            "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError("HTTP %d: %s" % (resp.status, resp.read()[:200]))
        first, last, itl, usage, done = None, None, [], None, False
        for raw in resp:
            line = raw.decode().strip()
            if not line:
                continue
            if not line.startswith("data: "):
                raise RuntimeError("bad SSE line %r" % line[:80])
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk["choices"] and chunk["choices"][0]["text"]:
                now = time.monotonic()
                if first is None:
                    first = now - t0
                else:
                    itl.append(now - last)
                last = now
        if not done or usage is None:
            raise RuntimeError("stream ended without usage and [DONE]")
        return first if first is not None else time.monotonic() - t0, itl, usage["completion_tokens"]
    finally:
        conn.close()


def client(i, port, args, stop_at, stats):
    rng = random.Random(i)
    while time.monotonic() < stop_at:
        try:
            ttft, itl, tokens = one_request(port, rng, args.max_tokens, args.request_timeout)
            stats.add(ttft, itl, tokens)
        except Exception as e:  # every failure is counted and reported
            stats.error("%s: %s" % (type(e).__name__, e))
            time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, help="a running server (default: start one)")
    ap.add_argument("--pid", type=int, help="the running server's pid, for RSS")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before the RSS baseline")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--request-timeout", type=float, default=60.0)
    ap.add_argument("--rss-slack-mb", type=float, default=16.0, help="allowed RSS growth after warm-up")
    # A small KV pool: the prefix cache reuses freed blocks last-freed-last, so a large pool keeps
    # faulting in fresh pages for minutes, which looks like growth; 16 MiB is cycled during warm-up.
    ap.add_argument("--serve-args", default="--kv-memory-mb 16", help="flags when the script starts the server")
    args = ap.parse_args()
    if not (1 <= args.clients <= 1024 and 0 < args.duration <= 3600):
        ap.error("--clients 1..1024 and --duration 0..3600")

    srv = None
    port, pid = args.port, args.pid
    if port is None:
        srv = Server(*args.serve_args.split())
        port, pid = srv.port, srv.pid

    stats = Stats()
    start = time.monotonic()
    stop_at = start + args.duration
    threads = [threading.Thread(target=client, args=(i, port, args, stop_at, stats), daemon=True)
               for i in range(args.clients)]
    for t in threads:
        t.start()
    rss, baseline = [], None
    while time.monotonic() < stop_at:
        time.sleep(min(2.0, max(0.0, stop_at - time.monotonic())))
        el = time.monotonic() - start
        r = rss_kb(pid) if pid else None
        if r is not None:
            rss.append((el, r))
            if baseline is None and el >= args.warmup:
                baseline = r
        with stats.lock:
            print("t=%5.1fs requests=%d tokens=%d errors=%d rss=%s" %
                  (el, stats.requests, stats.tokens, len(stats.errors), "%d KiB" % r if r else "?"), flush=True)
    for t in threads:
        t.join(args.request_timeout + 5)
    hung = sum(t.is_alive() for t in threads)
    elapsed = time.monotonic() - start
    m = wait_idle(port, timeout=10.0)
    final_rss = rss_kb(pid) if pid else None

    ok = True
    print("\n== load test: %d clients, %.0f s, max_tokens %d" % (args.clients, args.duration, args.max_tokens))
    print("requests: %d (%.1f/s)  generated tokens: %d (%.1f/s)  errors: %d  hung clients: %d" %
          (stats.requests, stats.requests / elapsed, stats.tokens, stats.tokens / elapsed, len(stats.errors), hung))
    for name, xs in (("TTFT", stats.ttft), ("ITL", stats.itl)):
        print("%-4s ms: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f" % (
            name, *(1000 * percentile(xs, p) for p in (50, 90, 99, 100))))
    for e in stats.errors[:5]:
        print("  error:", e)
    if stats.errors or hung or stats.requests == 0:
        ok = False
    if baseline is not None and final_rss is not None:
        growth = (final_rss - baseline) / 1024.0
        peak = max(r for _, r in rss) / 1024.0
        print("RSS: after warm-up %.1f MiB, peak %.1f MiB, end %.1f MiB (growth %+.1f MiB, slack %.0f)" %
              (baseline / 1024.0, peak, final_rss / 1024.0, growth, args.rss_slack_mb))
        if growth > args.rss_slack_mb:
            print("FAIL: resident memory grew after warm-up")
            ok = False
    print("KV blocks at the end: used %d of %d (cached %d), running %d, waiting %d" % (
        m["sluice:kv_blocks_used"], m["sluice:kv_blocks_total"], m["sluice:kv_blocks_cached"],
        m["sluice:num_requests_running"], m["sluice:num_requests_waiting"]))
    if m["sluice:kv_blocks_used"] != 0 or m["sluice:num_requests_running"] != 0:
        print("FAIL: KV blocks still held after every client finished")
        ok = False
    if srv and srv.stop() != 0:
        print("FAIL: the server did not exit 0 on SIGTERM")
        ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
