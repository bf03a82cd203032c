"""How long the studio takes to become usable on a run (docs/benchmarks.md, "Studio").

Starts the studio on RUN (as ``ssvae studio`` does: the session is opened first, then the
server listens), opens the page in headless Chromium and times, from the navigation:

- ``state_s``: the run's state is shown (the label buttons are drawn);
- ``queue_s``: "Take a query" clicked as soon as the buttons are there, the first queued
  image is shown and loaded;
- ``map_s``: the map's points are drawn (the Map tab opened once the queue is shown).

``open_s`` is the time to open the session (load the checkpoint, infer the training
split), before the server listens. The server's own time per request is printed too
(``requests``: path and seconds, first call of each). One JSON line; repeat with
``--repeat`` (each time a fresh session and a fresh browser)::

    python benchmarks/studio_open.py /tmp/mnist-run
    python benchmarks/studio_open.py /tmp/mnist-run --repeat 3

Needs the ``studio`` extra, selenium, ``chromium`` and ``chromedriver``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

from ssvae_core.errors import SSVAEError


def _browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def _timing_middleware(app, requests: list[tuple[str, float]]):  # type: ignore[no-untyped-def]
    async def timed(scope, receive, send):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                requests.append((scope["path"], round(time.perf_counter() - started, 3)))
    return timed


def measure(run: Path, timeout: float) -> dict[str, object]:
    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ssvae_core.studio import StudioSession, create_app

    token = secrets.token_urlsafe(16)
    started = time.perf_counter()
    session = StudioSession(run)
    open_s = time.perf_counter() - started
    num_train = session.state()["num_train"]
    requests: list[tuple[str, float]] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(
        _timing_middleware(create_app(session, token), requests), log_level="warning",
    ))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    driver = _browser()
    try:
        wait = WebDriverWait(driver, timeout, poll_frequency=0.02)
        element = lambda id_: driver.find_element(By.ID, id_)  # noqa: E731
        driver.get("about:blank")
        started = time.perf_counter()
        driver.get(f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#label-buttons .label-button"))
        state_s = time.perf_counter() - started
        element("take-query").click()
        wait.until(lambda d: element("current-image").is_displayed() and d.execute_script(
            "const img = document.getElementById('current-image');"
            "return img.complete && img.naturalWidth > 0"
        ))
        queue_s = time.perf_counter() - started
        element("tab-map").click()
        wait.until(lambda d: element("map-plot").get_attribute("data-state") == "ready"
                   and len(d.find_elements(By.CSS_SELECTOR, "#map-plot .scatterlayer .point"))
                   >= num_train // 2)
        map_s = time.perf_counter() - started
        points = len(driver.find_elements(By.CSS_SELECTOR, "#map-plot .scatterlayer .point"))
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=30)
        session.close()
        sock.close()
    first: dict[str, float] = {}
    for path, seconds in requests:
        first.setdefault(path, seconds)
    return {
        "run": str(run), "num_train": num_train,
        "open_s": round(open_s, 2), "state_s": round(state_s, 2), "queue_s": round(queue_s, 2),
        "map_s": round(map_s, 2), "usable_s": round(max(queue_s, map_s), 2), "points": points,
        "requests": first,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained run directory")
    parser.add_argument("--repeat", type=int, default=1, help="measurements, each with a fresh session")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each step")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1; got {args.repeat}")
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            print(f"error: {program} is not installed (Debian: apt-get install chromium chromium-driver)",
                  file=sys.stderr)
            return 2
    try:
        for _ in range(args.repeat):
            result = measure(args.run, args.timeout)
            result["load_1min"] = round(os.getloadavg()[0], 2)
            print(json.dumps(result), flush=True)
    except SSVAEError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
