#!/usr/bin/env python3
"""test_settings.py - `sluice serve --settings-from DB [--recommendation ID]` and the run record:
a recommendation stored by `sluice tune` is applied and printed, a flag on the command line
overrides it, a missing store or an unknown id exits 2 with a message, and with --db the served
requests are recorded as a real run at shutdown (seen in `sluice runs`); --kv-dtype f16 sizes and
records the KV pool in F16, a bad value exits 2; --num-speculative-tokens keeps the text and counts
the drafts. Standard library only."""
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import BIN, MODEL, Server, metrics, open_stream, post_json, sse_events  # noqa: E402


def run(*args):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


class Settings(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.db = os.path.join(cls.tmp.name, "t.db")
        rc, out = run("tune", "--slo", "ttft_p99=1s", "--preset", "chat", "--limit", "50", "--budget", "6", "--strategies", "continuous,naive",
                      "--db", cls.db)
        if rc != 0:
            raise unittest.SkipTest("sluice tune could not store a recommendation:\n" + out)
        m = re.search(r"stored as recommendation (\d+)", out)
        cls.reco = int(m.group(1))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_recommendation_applied_flag_overrides_and_run_recorded(self):
        srv = Server("--settings-from", self.db, "--recommendation", str(self.reco), "--max-num-seqs", "3",
                     "--db", self.db, "--threads", "1")
        log = "".join(srv.log)
        self.assertRegex(log, r"applied recommendation %d from .*: strategy \w+" % self.reco)
        self.assertIn("max_num_seqs 3,", log)  # the flag wins over the recommendation
        for _ in range(3):
            status, _, r = post_json(srv.port, "/v1/completions", {"prompt": "Once", "max_tokens": 4})
            self.assertEqual(status, 200, r)
        self.assertEqual(srv.stop(), 0)
        m = re.search(r"recorded run (\d+) in .* \((\d+) requests", "".join(srv.log))
        self.assertIsNotNone(m, "".join(srv.log))
        self.assertEqual(int(m.group(2)), 3)
        rc, out = run("runs", "--db", self.db)
        self.assertEqual(rc, 0, out)
        row = [line for line in out.splitlines() if line.startswith(m.group(1) + " ")]
        self.assertTrue(row and " real " in row[0] and " serve " in row[0], out)

    def test_bad_store_or_id_exits_2(self):
        rc, out = run("serve", "-m", MODEL, "--settings-from", self.db, "--recommendation", "99999")
        self.assertEqual(rc, 2)
        self.assertIn("no recommendation 99999", out)
        rc, out = run("serve", "-m", MODEL, "--settings-from", os.path.join(self.tmp.name, "absent.db"))
        self.assertEqual(rc, 2)
        self.assertIn("no such file", out)
        rc, out = run("serve", "-m", MODEL, "--recommendation", "1")
        self.assertEqual(rc, 2)


class KvDtype(unittest.TestCase):
    """--kv-dtype f16 on `sluice serve`: the pool under the same --kv-memory-mb holds twice the blocks of
    f32, requests are served, the recorded run says kv_dtype f16; int8 holds 8/3 times f32's blocks
    (stories260K's rows of 8: 8 bytes and a 4-byte scale against 32) and serves; a bad value exits 2
    naming it."""

    def ready_blocks(self, srv):
        m = re.search(r"(\d+) KV blocks of (f16|f32|int8)\)", "".join(srv.log))
        self.assertIsNotNone(m, "".join(srv.log))
        return int(m.group(1)), m.group(2)

    def test_f16_pool_served_and_recorded(self):
        with tempfile.TemporaryDirectory() as tmp:
            db = os.path.join(tmp, "kv.db")
            cap = ("--kv-memory-mb", "1", "--max-sequence-length", "256", "--threads", "1")
            srv = Server(*cap, "--kv-dtype", "f32")
            b32, t32 = self.ready_blocks(srv)
            self.assertEqual(srv.stop(), 0)
            srv = Server(*cap, "--kv-cache-dtype", "f16", "--db", db)
            b16, t16 = self.ready_blocks(srv)
            self.assertEqual((t32, t16), ("f32", "f16"))
            self.assertEqual(b16, 2 * b32)
            status, _, r = post_json(srv.port, "/v1/completions", {"prompt": "Once", "max_tokens": 8})
            self.assertEqual(status, 200, r)
            self.assertEqual(srv.stop(), 0)
            rc, out = run("show", "last", "--db", db)
            self.assertEqual(rc, 0, out)
            self.assertIn('"kv_dtype": "f16"', out)
            srv = Server(*cap, "--kv-dtype", "int8")
            b8, t8 = self.ready_blocks(srv)
            self.assertEqual(t8, "int8")
            self.assertTrue(8 * b32 // 3 <= b8 <= 8 * (b32 + 1) // 3, (b8, b32))
            status, _, r = post_json(srv.port, "/v1/completions", {"prompt": "Once", "max_tokens": 8})
            self.assertEqual(status, 200, r)
            self.assertEqual(srv.stop(), 0)

    def test_bad_kv_dtype_exits_2(self):
        rc, out = run("serve", "-m", MODEL, "--kv-dtype", "q8")
        self.assertEqual(rc, 2)
        self.assertIn("sluice serve: --kv-dtype: expected f32, f16 or int8, got 'q8'", out)


class Speculation(unittest.TestCase):
    """--num-speculative-tokens on `sluice serve`: a greedy completion, streamed and not, has the same
    text as on a server without drafts (several tokens per step reach the stream in order), and
    /metrics counts drafts run and kept."""

    def completion(self, port, stream):
        body = {"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0}
        if not stream:
            status, _, r = post_json(port, "/v1/completions", body)
            self.assertEqual(status, 200, r)
            return r["choices"][0]["text"]
        conn, resp = open_stream(port, "/v1/completions", dict(body, stream=True))
        self.assertEqual(resp.status, 200)
        events = list(sse_events(resp))
        conn.close()
        self.assertEqual(events[-1], "[DONE]")
        return "".join(e["choices"][0]["text"] for e in events[:-1])

    def test_drafts_keep_the_text_and_are_counted(self):
        plain = Server("--threads", "1")
        want = self.completion(plain.port, False)
        self.assertEqual(plain.stop(), 0)
        srv = Server("--threads", "1", "--num-speculative-tokens", "3", "--prompt-lookup-min", "1")
        self.assertEqual(self.completion(srv.port, False), want)
        self.assertEqual(self.completion(srv.port, True), want)
        m = metrics(srv.port)
        drafts = m["sluice:spec_decode_num_draft_tokens_total"]
        kept = m["sluice:spec_decode_num_accepted_tokens_total"]
        self.assertGreater(kept, 0)
        self.assertGreaterEqual(drafts, kept)
        self.assertEqual(srv.stop(), 0)

    def test_bad_lookup_length_exits_2(self):
        rc, out = run("serve", "-m", MODEL, "--prompt-lookup-max", "17")
        self.assertEqual(rc, 2)
        self.assertIn("--prompt-lookup-max: expected a number in 1..16, got '17'", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
