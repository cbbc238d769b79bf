"""serve_util.py - helpers shared by the serving tests: start/stop `sluice serve`, plain HTTP
requests, SSE streams parsed event by event, and /metrics scraping. Standard library only."""
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.environ.get("SLUICE_MODEL", os.path.join(ROOT, "..", "shared", "models", "stories260K.gguf"))
BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "build", "sluice"))


class Server:
    """A `sluice serve` process on a free loopback port (port 0), ready when its log says so."""

    def __init__(self, *extra, model=MODEL, timeout=60):
        args = [BIN, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0", "--chat-template", "chatml"]
        self.proc = subprocess.Popen(args + list(extra), stderr=subprocess.PIPE, text=True)
        self.port = None
        self.log = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"ready: .* on http://[\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("sluice serve did not start:\n" + "".join(self.log))
        # keep draining the log so a chatty server never blocks on a full pipe
        self._drain = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
        self._drain.start()

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the server and returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._drain.join(5)
        self.proc.stderr.close()
        return rc


def request(port, method, path, body=None, raw=None, headers=None, timeout=60):
    """One request; returns (status, headers dict with lower-case keys, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    conn.close()
    return out


def post_json(port, path, body, timeout=60):
    status, headers, data = request(port, "POST", path, body, timeout=timeout)
    return status, headers, json.loads(data) if data else None


def open_stream(port, path, body, timeout=60):
    """Starts a streaming request; returns (connection, response)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def sse_events(resp):
    """Yields each SSE event's data (a parsed dict, or the string "[DONE]") as it arrives,
    checking the framing: every event is 'data: ...' followed by a blank line."""
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.decode()
        if line in ("\n", "\r\n"):
            continue
        assert line.startswith("data: "), "bad SSE line: %r" % line
        blank = resp.readline().decode()
        assert blank in ("\n", "\r\n"), "event not followed by a blank line: %r" % blank
        payload = line[len("data: "):].rstrip("\r\n")
        yield payload if payload == "[DONE]" else json.loads(payload)


def metrics(port):
    """/metrics as {name: value} (labels other than model_name kept in the key)."""
    status, _, data = request(port, "GET", "/metrics")
    assert status == 200
    out = {}
    for line in data.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        key = re.sub(r'model_name="[^"]*",?', "", key).replace("{}", "")
        out[key] = float(value)
    return out


def wait_idle(port, timeout=5.0):
    """Waits until no request runs or waits and no KV block is held; returns the last metrics."""
    deadline = time.time() + timeout
    while True:
        m = metrics(port)
        idle = m["sluice:kv_blocks_used"] == 0 and m["sluice:num_requests_running"] == 0 and m["sluice:num_requests_waiting"] == 0
        if idle or time.time() > deadline:
            return m
        time.sleep(0.02)


def rss_kb(pid):
    """Resident memory of a process in KiB (from /proc/PID/status), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
