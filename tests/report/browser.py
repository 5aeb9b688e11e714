"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` speaks CDP as NUL-terminated JSON on file descriptors 3
(commands in) and 4 (replies out): no websocket library, no driver download.

    with Browser() as b:
        b.open(Path("report.html"), width=1400)
        b.images()              # [{"src": ..., "naturalWidth": ...}, ...]
        b.screenshot("page.png")

Also a script that refreshes the docs screenshots from a rendered report (one PNG per section):

    .venv/bin/python tests/report/browser.py demo/report.html docs/img [PREFIX [SECTION ...]]
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _high(fds: tuple[int, int]) -> tuple[int, int]:
    """The same pipe ends moved to descriptors >= 10, clear of 3 and 4."""
    out = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return out  # type: ignore[return-value]


class Browser:
    """One headless Chromium process and one page."""

    def __init__(self, *, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self.exe = find_chromium()
        if self.exe is None:
            raise RuntimeError("chromium is not installed: `apt-get install -y --no-install-recommends chromium` "
                               "(scripts/setup.sh --all does it)")
        self._id = 0
        self._buf = b""
        self.session: str | None = None

    def __enter__(self) -> Browser:
        self.profile = tempfile.mkdtemp(prefix="flowlake-chromium-")
        cmd_r, self._cmd_w = _high(os.pipe())  # we write commands, chromium reads fd 3
        self._out_r, out_w = _high(os.pipe())  # chromium writes fd 4, we read
        args = [self.exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
                "--disable-dev-shm-usage", f"--user-data-dir={self.profile}", "about:blank"]
        # bash puts the pipe ends on fds 3 and 4 (both are >= 10 here, so no clash) and execs chromium
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$@" 3<&{cmd_r} 4>&{out_w} {cmd_r}<&- {out_w}>&-', "sh", *args],
            pass_fds=(cmd_r, out_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.close(cmd_r)
        os.close(out_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close", _session=False)
        except Exception:  # noqa: BLE001 - the process may be gone already
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._out_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    # -------------------------------------------------------------- protocol

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"chromium closed its DevTools pipe: {err}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, _session: bool = True, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if _session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while True:
            msg = self._read_message(deadline)
            if msg.get("method") == method:
                return msg.get("params", {})

    # -------------------------------------------------------------- page

    def open(self, page: Path, *, width: int = 1400, height: int = 900) -> None:
        """Load a local file at a window ``width`` px wide and wait for its load event."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        self.call("Page.navigate", url=Path(page).resolve().as_uri())
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def images(self) -> list[dict]:
        """Every <img> with whether it finished loading and its natural size."""
        return self.evaluate("Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
                             "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}))")

    def screenshot(self, out: Path, *, selector: str | None = None) -> Path:
        """PNG of the whole page (or of the first element matching ``selector``) at the page's width."""
        if selector:
            box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                                ".getBoundingClientRect(); return {x: r.left + window.scrollX, "
                                "y: r.top + window.scrollY, width: r.width, height: r.height}; })()")
        else:
            box = self.evaluate("({x: 0, y: 0, width: document.documentElement.scrollWidth, "
                                "height: document.documentElement.scrollHeight})")
        clip = {**box, "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out


SECTIONS = ("summary", "dependencies", "segments", "policy", "capacity", "crosszone")


def main(argv: list[str]) -> int:
    """browser.py REPORT.html OUT_DIR [PREFIX [SECTION ...]]: one PNG per section at 1400 px."""
    if len(argv) < 2:
        print("usage: browser.py REPORT.html OUT_DIR [PREFIX [SECTION ...]]", file=sys.stderr)
        return 2
    page, out_dir = Path(argv[0]), Path(argv[1])
    prefix = argv[2] if len(argv) > 2 else "report"
    sections = argv[3:] or SECTIONS
    with Browser() as b:
        b.open(page, width=1400)
        broken = [i for i in b.images() if not i["naturalWidth"]]
        if broken:
            print(f"broken images: {broken}", file=sys.stderr)
            return 1
        for s in sections:
            print(b.screenshot(out_dir / f"{prefix}-{s}.png", selector=f"#{s}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
