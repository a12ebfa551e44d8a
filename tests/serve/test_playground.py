"""The playground page in headless Chromium (Debian's `chromium`), driven over the DevTools protocol's pipe."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")


class Browser:
    """One headless page, commands sent as NUL-ended JSON on fd 3, answers read from fd 4."""

    def __init__(self, profile: Path) -> None:
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def fds() -> None:
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        args = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--window-size=1100,900",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            preexec_fn=fds,
            pass_fds=(3, 4) if False else (),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
        )
        os.close(to_child)
        os.close(from_child)
        self._id, self._buf = 0, b""
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._r, 1 << 16)
                assert chunk, "chromium went away"
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            doc = json.loads(raw)
            if doc.get("id") == self._id:
                assert "error" not in doc, doc
                return doc["result"]

    def page(self, method: str, **params) -> dict:
        return self.call(method, self.session, **params)

    def js(self, expr: str):
        res = self.page("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")

    def wait(self, expr: str, timeout: float = 30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError(f"never true: {expr}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._w)
        os.close(self._r)


def test_playground_streams_and_colours_surprise(server, tiny_run: Path, tmp_path: Path) -> None:
    b = Browser(tmp_path / "profile")
    try:
        b.page("Page.enable")
        b.page("Page.navigate", url=server.url + "/")
        b.wait("document.readyState === 'complete' && !!document.getElementById('generate')")
        assert b.js("document.getElementById('model').textContent") == tiny_run.name
        # type a prime, press generate: text streams in
        b.js("document.getElementById('prime').focus()")
        b.page("Input.insertText", text="the cat")
        b.js("document.getElementById('length').value = 2000")
        b.js("document.getElementById('generate').click()")
        first = b.wait("(document.getElementById('generated') || {}).textContent")
        assert first
        b.wait("document.getElementById('status').textContent.includes(' in ')")
        done = b.js("document.getElementById('status').textContent")
        assert "2000 characters" in done and "(length)" in done, done
        assert int(done.split("streamed in ")[1].split(" parts")[0]) >= 2, done  # it came as a stream
        assert len(b.js("document.getElementById('generated').textContent")) == 2000
        assert b.js("document.querySelector('#output .prime').textContent") == "the cat"
        # the surprise view colours a typed text, one span per character, hover shows the guesses
        b.js("document.getElementById('typed').focus()")
        b.page("Input.insertText", text="the cat sees the moon.\n小狗 chases 🎾.")
        n = b.wait("document.querySelectorAll('#surprise span').length")
        assert n == len("the cat sees the moon.\n小狗 chases 🎾.")
        colours = b.js("[...document.querySelectorAll('#surprise span')].map(s => s.style.background)")
        assert colours[0] == "" and all(c.startswith("rgba(230, 40, 30") for c in colours[1:] if c)
        assert sum(1 for c in colours if c) >= n // 2
        box = b.js(
            "(() => { const r = document.querySelectorAll('#surprise span')[5].getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        b.page("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
        tip = b.wait(
            "document.getElementById('tip').style.display === 'block' && document.getElementById('tip').textContent"
        )
        assert "model expected:" in tip and "bits" in tip
        shot = base64.b64decode(b.page("Page.captureScreenshot", format="png")["data"])
        out = Path(os.environ.get("CHARLM_SCREENSHOT_DIR", tmp_path)) / "playground.png"
        out.write_bytes(shot)
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    finally:
        b.close()
