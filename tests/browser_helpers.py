"""Headless Chromium for the dashboard tests, and a llamasup ``Service`` in a thread for it.

Selenium drives Debian's ``chromium`` through Debian's ``chromedriver`` (both installed by
``scripts/install-tools.sh test``; nothing is downloaded at run time: the driver's path is
given, so Selenium Manager is never asked). Selenium blocks, so the service runs on an event
loop of its own in a thread, and the test talks to it over HTTP like the browser does.

Waits are on DOM conditions with deadlines (:func:`wait_dom`), never fixed sleeps.
Screenshots go to ``$LLAMASUP_TEST_ARTIFACTS`` (default ``test-artifacts/`` at the top of the
checkout, which git ignores).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait
from service_helpers import RunningService, running_service

from llamasup.service.app import Service

T = TypeVar("T")

CHROMIUM = os.environ.get("LLAMASUP_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LLAMASUP_CHROMEDRIVER", "/usr/bin/chromedriver")
#: what a busy 2-core machine may need for one page condition
DOM_TIMEOUT = 20.0
DESKTOP = (1280, 900)
PHONE = (390, 844)

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def artifacts_dir() -> Path:
    default = Path(__file__).resolve().parent.parent / "test-artifacts"
    folder = Path(os.environ.get("LLAMASUP_TEST_ARTIFACTS", default)) / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile; fails (never skips) when it is missing."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).is_file():
            raise RuntimeError(
                f"{path} is missing: `bash scripts/install-tools.sh test` installs Debian's "
                f"{package} (or set LLAMASUP_CHROMIUM / LLAMASUP_CHROMEDRIVER)"
            )
    profile = tempfile.mkdtemp(prefix="llamasup-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in _FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def fresh(driver: WebDriver) -> None:
    """Forget every cookie and go back to the desktop size (one browser serves a module)."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.set_window_size(*DESKTOP)


def wait_dom(
    driver: WebDriver,
    condition: Callable[[WebDriver], T],
    what: str,
    timeout: float = DOM_TIMEOUT,
) -> T:
    """Poll ``condition`` (a falsy answer or a stale element means "not yet") until it holds."""
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    )
    result: T = wait.until(condition, f"waiting for {what}")
    return result


def js(driver: WebDriver, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def screenshot(driver: WebDriver, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


@dataclass
class ThreadedService:
    """A running llamasup on its own event loop; ``client`` is a plain synchronous client."""

    url: str
    service: Service
    loop: asyncio.AbstractEventLoop
    client: httpx.Client

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coroutine`` on the service's loop (the service is not thread-safe)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def status(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        reply = self.client.get("/api/status", headers=headers)
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data


@contextmanager
def service_thread(
    path: Path, *, environ: dict[str, str] | None = None
) -> Iterator[ThreadedService]:
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    holder: list[tuple[RunningService, asyncio.AbstractEventLoop]] = []
    failure: list[BaseException] = []

    async def main() -> None:
        stopping = asyncio.Event()
        stop.append(stopping)
        async with running_service(path, watch=False, environ=environ) as running:
            holder.append((running, asyncio.get_running_loop()))
            ready.set()
            await stopping.wait()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="llamasup-service", daemon=True)
    thread.start()
    if not ready.wait(60.0) or not holder:
        raise RuntimeError(f"the service did not start: {failure!r}")
    running, loop = holder[0]
    try:
        with httpx.Client(base_url=running.url, timeout=30.0, trust_env=False) as client:
            yield ThreadedService(running.url, running.service, loop, client)
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(60.0)
        if failure:
            raise failure[0]
