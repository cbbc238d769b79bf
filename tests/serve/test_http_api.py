#!/usr/bin/env python3
"""test_http_api.py - `sluice serve` over real HTTP on loopback (standard library only):
every endpoint, streaming parsed chunk by chunk, every error case, a client that disconnects
mid-stream frees its KV blocks (seen in /metrics), 429 under a tiny queue, and a clean SIGTERM.

Uses the server at 127.0.0.1:$SLUICE_PORT when set (scripts/test-serve.sh starts one), else
starts its own; the tiny-queue and shutdown cases always start their own."""
import json
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, metrics, open_stream, post_json, request, sse_events, wait_idle  # noqa: E402

MODEL = "stories260K"
PORT = None
OWN = None


def setUpModule():
    global PORT, OWN
    if os.environ.get("SLUICE_PORT"):
        PORT = int(os.environ["SLUICE_PORT"])
    else:
        OWN = Server()
        PORT = OWN.port


def tearDownModule():
    if OWN:
        assert OWN.stop() == 0


def completion(**kw):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    body.update(kw)
    return post_json(PORT, "/v1/completions", body)


def assert_error(test, status, headers, body, code, want_status=400, param=None):
    test.assertEqual(status, want_status, body)
    test.assertTrue(headers["content-type"].startswith("application/json"))
    err = body["error"]
    test.assertEqual(set(err), {"message", "type", "param", "code"})
    test.assertEqual(err["code"], code)
    test.assertTrue(err["message"])
    if param is not None:
        test.assertEqual(err["param"], param)


class Endpoints(unittest.TestCase):
    def test_health_and_models(self):
        status, _, _ = request(PORT, "GET", "/health")
        self.assertEqual(status, 200)
        status, _, data = request(PORT, "GET", "/v1/models")
        models = json.loads(data)
        self.assertEqual(models["object"], "list")
        self.assertEqual(models["data"][0]["id"], MODEL)
        self.assertGreater(models["data"][0]["max_model_len"], 0)

    def test_completion_shape_and_usage(self):
        status, _, r = completion()
        self.assertEqual(status, 200, r)
        self.assertTrue(r["id"].startswith("cmpl-"))
        self.assertEqual(r["object"], "text_completion")
        self.assertEqual(r["model"], MODEL)
        self.assertIsInstance(r["created"], int)
        ch = r["choices"][0]
        self.assertEqual(ch["index"], 0)
        self.assertIsInstance(ch["text"], str)
        self.assertIn(ch["finish_reason"], ("stop", "length"))
        u = r["usage"]
        self.assertGreater(u["prompt_tokens"], 0)
        self.assertEqual(u["total_tokens"], u["prompt_tokens"] + u["completion_tokens"])
        if ch["finish_reason"] == "length":
            self.assertEqual(u["completion_tokens"], 8)

    def test_greedy_is_deterministic_and_token_prompt_matches_text(self):
        _, _, a = completion()
        _, _, b = completion()
        self.assertEqual(a["choices"][0]["text"], b["choices"][0]["text"])
        _, _, tok = post_json(PORT, "/tokenize", {"prompt": "Once upon a time"})
        _, _, c = completion(prompt=tok["tokens"])
        self.assertEqual(c["choices"][0]["text"], a["choices"][0]["text"])
        self.assertEqual(c["usage"]["prompt_tokens"], a["usage"]["prompt_tokens"])

    def test_seeded_sampling_repeats(self):
        _, _, a = completion(temperature=1.0, seed=7, max_tokens=12)
        _, _, b = completion(temperature=1.0, seed=7, max_tokens=12)
        self.assertEqual(a["choices"][0]["text"], b["choices"][0]["text"])

    def test_n_best_of_and_logprobs(self):
        status, _, r = completion(n=3, temperature=1.0, seed=1)
        self.assertEqual(status, 200, r)
        self.assertEqual([c["index"] for c in r["choices"]], [0, 1, 2])
        status, _, r = completion(n=1, best_of=3, temperature=1.0, seed=1)
        self.assertEqual(status, 200, r)
        self.assertEqual(len(r["choices"]), 1)
        status, _, r = completion(logprobs=1, max_tokens=4)
        lp = r["choices"][0]["logprobs"]
        self.assertEqual(len(lp["tokens"]), r["usage"]["completion_tokens"])
        self.assertTrue(all(x <= 0 for x in lp["token_logprobs"]))
        self.assertEqual(len(lp["top_logprobs"]), len(lp["tokens"]))

    def test_penalties_are_accepted_and_change_greedy_output(self):
        _, _, plain = completion(max_tokens=40)
        status, _, pres = completion(max_tokens=40, presence_penalty=2.0)
        self.assertEqual(status, 200, pres)
        self.assertNotEqual(pres["choices"][0]["text"], plain["choices"][0]["text"])
        status, _, freq = completion(max_tokens=40, frequency_penalty=-1.5)
        self.assertEqual(status, 200, freq)
        status, headers, r = completion(presence_penalty=2.5)
        assert_error(self, status, headers, r, "invalid_value", param="presence_penalty")

    def test_completion_top_logprobs(self):
        status, _, r = completion(logprobs=3, max_tokens=6)
        self.assertEqual(status, 200, r)
        lp = r["choices"][0]["logprobs"]
        self.assertEqual(len(lp["tokens"]), 6)
        text = r["choices"][0]["text"]
        self.assertEqual(lp["text_offset"][0], 0)
        for tok, val, top, off in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], lp["text_offset"]):
            self.assertTrue(3 <= len(top) <= 4, top)                  # the 3 best, plus the sampled one
            self.assertTrue(all(v <= 0 for v in top.values()))
            self.assertEqual(max(top, key=top.get), tok)             # greedy: the sampled token is the best
            self.assertAlmostEqual(top[tok], val, places=4)
            self.assertEqual(text[off:off + len(tok)], tok)

    def test_chat_top_logprobs(self):
        status, _, r = post_json(PORT, "/v1/chat/completions", {
            "model": MODEL, "max_tokens": 5, "temperature": 0, "logprobs": True, "top_logprobs": 4,
            "messages": [{"role": "user", "content": "Hello"}]})
        self.assertEqual(status, 200, r)
        content = r["choices"][0]["logprobs"]["content"]
        self.assertEqual(len(content), r["usage"]["completion_tokens"])
        for entry in content:
            top = entry["top_logprobs"]
            self.assertEqual(len(top), 4)
            self.assertEqual(top[0]["token"], entry["token"])
            self.assertAlmostEqual(top[0]["logprob"], entry["logprob"], places=4)
            vals = [t["logprob"] for t in top]
            self.assertEqual(vals, sorted(vals, reverse=True))
            self.assertTrue(all(v <= 0 for v in vals))
            self.assertEqual(bytes(entry["bytes"]).decode("utf-8", "replace"), entry["token"])

    def test_best_of_with_logprobs(self):
        status, _, r = completion(n=2, best_of=4, logprobs=2, temperature=1.0, seed=5, max_tokens=6)
        self.assertEqual(status, 200, r)
        self.assertEqual(len(r["choices"]), 2)
        means = []
        for c in r["choices"]:
            lp = c["logprobs"]
            self.assertEqual(len(lp["tokens"]), 6)
            self.assertEqual(len(lp["top_logprobs"]), 6)
            self.assertTrue(all(x <= 0 for x in lp["token_logprobs"]))
            means.append(sum(lp["token_logprobs"]) / 6)
        self.assertGreaterEqual(means[0] + 1e-6, means[1])           # ranked by mean logprob
        conn, resp = open_stream(PORT, "/v1/completions", {
            "model": MODEL, "prompt": "Once", "n": 1, "best_of": 2, "logprobs": 1, "stream": True})
        self.assertEqual(resp.status, 400)                           # streaming cannot rank: as OpenAI
        conn.close()

    def test_stop_string_is_cut(self):
        _, _, full = completion(max_tokens=30)
        text = full["choices"][0]["text"]
        if len(text) < 6:
            self.skipTest("model stopped too early to pick a stop string")
        stop = text[3:6]
        _, _, r = completion(max_tokens=30, stop=[stop])
        self.assertEqual(r["choices"][0]["finish_reason"], "stop")
        self.assertEqual(r["choices"][0]["text"], text[: text.index(stop)])

    def test_chat_completion(self):
        status, _, r = post_json(PORT, "/v1/chat/completions", {
            "model": MODEL, "max_tokens": 6, "temperature": 0,
            "messages": [{"role": "system", "content": "Tell a story."}, {"role": "user", "content": "Hi"}]})
        self.assertEqual(status, 200, r)
        self.assertTrue(r["id"].startswith("chatcmpl-"))
        self.assertEqual(r["object"], "chat.completion")
        msg = r["choices"][0]["message"]
        self.assertEqual(msg["role"], "assistant")
        self.assertIsInstance(msg["content"], str)
        self.assertGreater(r["usage"]["prompt_tokens"], 5)

    def test_tokenize_detokenize_roundtrip(self):
        status, _, t = post_json(PORT, "/tokenize", {"prompt": "Lily had a dog.", "add_special_tokens": False})
        self.assertEqual(status, 200, t)
        self.assertEqual(t["count"], len(t["tokens"]))
        status, _, d = post_json(PORT, "/detokenize", {"tokens": t["tokens"]})
        self.assertEqual(status, 200, d)
        self.assertEqual(d["prompt"].strip(), "Lily had a dog.")
        status, _, t = post_json(PORT, "/tokenize", {"messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(status, 200, t)
        self.assertGreater(t["count"], 3)

    def test_metrics_text(self):
        completion()
        status, headers, data = request(PORT, "GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain"))
        m = metrics(PORT)
        for name in ("sluice:num_requests_running", "sluice:num_requests_waiting", "sluice:kv_cache_usage_perc",
                     "sluice:prefix_cache_queries_total", "sluice:prefix_cache_hits_total",
                     "sluice:num_preemptions_total", "sluice:prompt_tokens_total", "sluice:generation_tokens_total",
                     "sluice:time_to_first_token_seconds_count", "sluice:inter_token_latency_seconds_count",
                     "sluice:e2e_request_latency_seconds_count", "sluice:request_queue_time_seconds_count"):
            self.assertIn(name, m)
        self.assertGreater(m["sluice:generation_tokens_total"], 0)
        self.assertGreater(m["sluice:e2e_request_latency_seconds_count"], 0)
        # all cores by default, fewer while other processes hold some
        self.assertGreaterEqual(m["sluice:cpu_threads_active"], 1)
        self.assertLessEqual(m["sluice:cpu_threads_active"], os.cpu_count())
        self.assertIn("sluice:cpu_thread_drops_total", m)

    def test_fixed_threads_keep_their_count(self):
        srv = Server("--threads", "2", "--fixed-threads")
        try:
            status, _, _ = post_json(srv.port, "/v1/completions",
                                     {"model": MODEL, "prompt": "Once", "max_tokens": 16, "temperature": 0})
            self.assertEqual(status, 200)
            m = metrics(srv.port)
            self.assertEqual(m["sluice:cpu_threads_active"], 2)
            self.assertEqual(m["sluice:cpu_thread_drops_total"], 0)
        finally:
            srv.stop()


class Streaming(unittest.TestCase):
    def test_completion_stream_matches_blocking_text(self):
        _, _, full = completion(max_tokens=20)
        conn, resp = open_stream(PORT, "/v1/completions", {
            "model": MODEL, "prompt": "Once upon a time", "max_tokens": 20, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}})
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.getheader("Content-Type").startswith("text/event-stream"))
        events = list(sse_events(resp))
        conn.close()
        self.assertEqual(events[-1], "[DONE]")
        usage_chunk = events[-2]
        self.assertEqual(usage_chunk["choices"], [])
        self.assertEqual(usage_chunk["usage"], full["usage"])
        chunks = events[:-2]
        self.assertTrue(all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks))
        self.assertEqual("".join(c["choices"][0]["text"] for c in chunks), full["choices"][0]["text"])
        self.assertTrue(all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1]))
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], full["choices"][0]["finish_reason"])

    def test_chat_stream_role_then_content(self):
        conn, resp = open_stream(PORT, "/v1/chat/completions", {
            "model": MODEL, "max_tokens": 10, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "Hello"}]})
        events = list(sse_events(resp))
        conn.close()
        self.assertEqual(events[-1], "[DONE]")
        chunks = events[:-1]
        self.assertEqual(chunks[0]["object"], "chat.completion.chunk")
        self.assertEqual(chunks[0]["choices"][0]["delta"], {"role": "assistant", "content": ""})
        self.assertIsNotNone(chunks[-1]["choices"][0]["finish_reason"])
        self.assertNotIn("usage", chunks[-1])

    def test_stream_n2_has_both_indexes(self):
        conn, resp = open_stream(PORT, "/v1/completions", {
            "model": MODEL, "prompt": "Once", "max_tokens": 5, "n": 2, "temperature": 1, "seed": 3, "stream": True})
        events = list(sse_events(resp))
        conn.close()
        finished = {c["choices"][0]["index"] for c in events[:-1] if c["choices"][0]["finish_reason"]}
        self.assertEqual(finished, {0, 1})


class Errors(unittest.TestCase):
    def check(self, path, raw, code, status=400, param=None):
        st, headers, data = request(PORT, "POST", path, raw=raw)
        assert_error(self, st, headers, json.loads(data), code, status, param)

    def test_bad_requests(self):
        self.check("/v1/completions", b"{not json", "invalid_json")
        self.check("/v1/completions", b"[1]", "invalid_type")
        self.check("/v1/completions", b'{"prompt": "x", "temperature": "hot"}', "invalid_type", param="temperature")
        self.check("/v1/completions", b'{"model": "stories260K"}', "missing_field", param="prompt")
        self.check("/v1/chat/completions", b'{"model": "stories260K"}', "missing_field", param="messages")
        self.check("/v1/completions", b'{"prompt": "x", "model": "gpt-4"}', "model_not_found", param="model")
        self.check("/v1/completions", b'{"prompt": "x", "max_tokens": 100000}', "context_length_exceeded", param="prompt")
        self.check("/v1/completions", b'{"prompt": [1, 99999]}', "invalid_value", param="prompt[1]")
        self.check("/detokenize", b'{"tokens": "abc"}', "invalid_type", param="tokens")

    def test_unknown_path_and_method(self):
        st, h, data = request(PORT, "GET", "/v1/nothing")
        assert_error(self, st, h, json.loads(data), "not_found", 404)
        st, h, data = request(PORT, "GET", "/v1/completions")
        assert_error(self, st, h, json.loads(data), "method_not_allowed", 405)
        self.assertEqual(h["allow"], "POST")

    def test_body_over_limit(self):
        big = b'{"prompt": "' + b"a" * (2 << 20) + b'"}'
        try:
            st, h, data = request(PORT, "POST", "/v1/completions", raw=big)
            assert_error(self, st, h, json.loads(data), "body_too_large", 413)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before the whole body is sent
        # chunked upload without Content-Length: read, dropped, then 413
        conn = __import__("http.client").client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        conn.putrequest("POST", "/v1/completions")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for _ in range(40):
            piece = b"a" * 65536
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 413)
        conn.close()
        self.assertEqual(request(PORT, "GET", "/health")[0], 200)  # still serving

    def test_server_keeps_serving_after_garbage(self):
        s = socket.create_connection(("127.0.0.1", PORT))
        s.settimeout(2)
        s.sendall(b"\x00\xff garbage \r\n\r\n")
        try:
            s.recv(4096)
        except socket.timeout:
            pass
        s.close()
        self.assertEqual(completion()[0], 200)


class Disconnect(unittest.TestCase):
    def test_disconnect_mid_stream_frees_blocks(self):
        before = metrics(PORT)
        conns = []
        for i in range(8):
            conn, resp = open_stream(PORT, "/v1/completions", {
                "model": MODEL, "prompt": "Once upon a time %d" % i, "max_tokens": 400, "temperature": 1,
                "seed": i, "stream": True})
            next(sse_events(resp))  # the request is running
            conns.append(conn)
        for conn in conns:
            conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
        m = wait_idle(PORT, timeout=2.0)
        self.assertEqual(m["sluice:kv_blocks_used"], 0)
        self.assertEqual(m["sluice:num_requests_running"], 0)
        # a request leaves the scheduler (blocks, running count) before its completion callback
        # records it in the latency histogram: wait for the callbacks too
        count = "sluice:e2e_request_latency_seconds_count"
        deadline = time.time() + 2.0
        while m[count] - before[count] < 8 and time.time() < deadline:
            time.sleep(0.02)
            m = metrics(PORT)
        aborted = m['sluice:request_success_total{finished_reason="abort"}'] - \
            before['sluice:request_success_total{finished_reason="abort"}']
        finished = m[count] - before[count]
        self.assertEqual(finished, 8)
        self.assertGreater(aborted, 0, "no request was still running at the disconnect")


class Overload(unittest.TestCase):
    def test_tiny_queue_answers_429_with_retry_after(self):
        srv = Server("--max-waiting-requests", "1", "--max-num-seqs", "1", "--threads", "1")
        try:
            results = []

            def one(i):
                st, h, body = post_json(srv.port, "/v1/completions", {
                    "prompt": "Once upon a time", "max_tokens": 200, "temperature": 1, "seed": i})
                results.append((st, h, body))

            threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            codes = sorted(st for st, _, _ in results)
            self.assertIn(200, codes)
            self.assertIn(429, codes)
            self.assertEqual(set(codes), {200, 429})
            for st, h, body in results:
                if st == 429:
                    self.assertEqual(h["retry-after"], "1")
                    self.assertEqual(body["error"]["code"], "queue_full")
                    self.assertEqual(body["error"]["type"], "rate_limit_error")
            self.assertEqual(wait_idle(srv.port)["sluice:kv_blocks_used"], 0)
        finally:
            self.assertEqual(srv.stop(), 0)


class Shutdown(unittest.TestCase):
    def test_sigterm_finishes_streams_and_exits_0(self):
        srv = Server("--shutdown-timeout", "5")
        conn, resp = open_stream(srv.port, "/v1/completions", {
            "prompt": "Once upon a time", "max_tokens": 300, "stream": True})
        first = next(sse_events(resp))
        self.assertIn("choices", first)
        srv.proc.send_signal(signal.SIGTERM)
        rest = list(sse_events(resp))  # the stream ends (finished or aborted), never hangs
        conn.close()
        self.assertEqual(rest[-1], "[DONE]")
        t0 = time.time()
        self.assertEqual(srv.stop(timeout=15), 0)
        self.assertLess(time.time() - t0, 10)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
