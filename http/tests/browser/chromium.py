"""Opens a page in headless Chromium and prints what it computed (http/tests/browser.rs).

    python3 chromium.py URL [TIMEOUT_S]

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: it
reads commands on fd 3 and writes answers on fd 4, one JSON message per NUL byte), so
no port, websocket library or browser download is needed: Debian's `chromium` and the
standard library. The page stores its result in `window.__result`; this prints it as
JSON on the first line, then the browser's console and network log lines (CORS
refusals show there). `--dump-dom` is no use here: it dumps at the `load` event, before
the streams end. Runs as root, hence --no-sandbox.
"""

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

CHROMIUM = os.environ.get("ORCHD_CHROMIUM") or shutil.which("chromium") or "chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--mute-audio",
]
WAIT = """new Promise(r => { const f = () => window.__result
  ? r(JSON.stringify(window.__result)) : setTimeout(f, 25); f(); })"""


class Browser:
    def __init__(self, profile, log):
        to_r, self.w = os.pipe()
        self.r, from_w = os.pipe()

        def fds():
            os.dup2(to_r, 3)
            os.dup2(from_w, 4)

        argv = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        # close_fds would close 3 and 4 again after preexec_fn; os.pipe() fds are
        # close-on-exec, so nothing else leaks into Chromium.
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     preexec_fn=fds, close_fds=False)
        os.close(to_r)
        os.close(from_w)
        self.buf, self.next_id, self.events = b"", 0, []

    def read(self, deadline):
        while b"\0" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from Chromium")
            if select.select([self.r], [], [], 0.2)[0]:
                data = os.read(self.r, 65536)
                if not data:
                    raise EOFError("Chromium closed its pipe")
                self.buf += data
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self.read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it is going anyway
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main():
    url, timeout = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 30
    profile = tempfile.mkdtemp(prefix="orchd-chromium-")
    with open(os.path.join(profile, "chromium.log"), "w") as log:
        b = Browser(profile, log)
        try:
            target = next(t["targetId"] for t in b.call("Target.getTargets")["targetInfos"]
                          if t["type"] == "page")
            s = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                b.call(domain + ".enable", session=s)
            b.call("Page.navigate", {"url": url}, session=s)
            r = b.call("Runtime.evaluate", {"expression": WAIT, "awaitPromise": True,
                                            "returnByValue": True, "timeout": timeout * 1000},
                       session=s, timeout=timeout + 5)
            print(r["result"]["value"])
            for e in b.events:
                if e.get("method") == "Log.entryAdded":
                    entry = e["params"]["entry"]
                    print(f"browser [{entry['source']}/{entry['level']}] {entry['text']}")
        finally:
            b.close()
            shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
