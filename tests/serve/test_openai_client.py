#!/usr/bin/env python3
"""test_openai_client.py - the official OpenAI Python client (`pip install openai`) completes,
chats and streams against `sluice serve`, unmodified. Uses 127.0.0.1:$SLUICE_PORT when set,
else starts its own server. Exits 0 with "SKIPPED" when the openai package is missing."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server  # noqa: E402

try:
    import openai
except ImportError:
    print("SKIPPED: the openai package is not installed (pip install openai)")
    sys.exit(0)

MODEL = "stories260K"
OWN = None
client = None


def setUpModule():
    global OWN, client
    port = os.environ.get("SLUICE_PORT")
    if not port:
        OWN = Server()
        port = OWN.port
    client = openai.OpenAI(base_url="http://127.0.0.1:%s/v1" % port, api_key="unused", max_retries=0)


def tearDownModule():
    if OWN:
        assert OWN.stop() == 0


class OpenAIClient(unittest.TestCase):
    def test_models(self):
        ids = [m.id for m in client.models.list()]
        self.assertEqual(ids, [MODEL])

    def test_completion(self):
        r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12, temperature=0)
        self.assertEqual(r.object, "text_completion")
        self.assertTrue(r.choices[0].text)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)

    def test_chat(self):
        r = client.chat.completions.create(model=MODEL, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Tell me a story"}])
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertIsInstance(r.choices[0].message.content, str)
        self.assertGreater(r.usage.prompt_tokens, 0)

    def test_completion_stream(self):
        blocking = client.completions.create(model=MODEL, prompt="Lily", max_tokens=16, temperature=0)
        text, usage = "", None
        for chunk in client.completions.create(model=MODEL, prompt="Lily", max_tokens=16, temperature=0, stream=True,
                                               stream_options={"include_usage": True}):
            if chunk.choices:
                text += chunk.choices[0].text
            if chunk.usage:
                usage = chunk.usage
        self.assertEqual(text, blocking.choices[0].text)
        self.assertEqual(usage.completion_tokens, blocking.usage.completion_tokens)

    def test_chat_stream(self):
        pieces, finish = [], None
        stream = client.chat.completions.create(model=MODEL, max_tokens=10, temperature=0, stream=True,
                                                messages=[{"role": "user", "content": "Hi"}])
        for chunk in stream:
            delta = chunk.choices[0].delta
            if delta.content:
                pieces.append(delta.content)
            finish = chunk.choices[0].finish_reason or finish
        self.assertTrue(pieces)
        self.assertIn(finish, ("stop", "length"))

    def test_errors_raise_typed_exceptions(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        self.assertEqual(cm.exception.status_code, 400)
        self.assertIn("no-such-model", str(cm.exception))
        with self.assertRaises(openai.BadRequestError):
            client.completions.create(model=MODEL, prompt="x", max_tokens=10 ** 6)


if __name__ == "__main__":
    unittest.main(verbosity=2)
