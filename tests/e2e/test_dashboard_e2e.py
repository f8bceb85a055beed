"""The dashboard in headless Chromium against a real llama-server on the generated tiny model:
the overview shows the real sidecar, the playground streams its answer with llama-server's own
timings, and the page's unload stops it."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import chromium, screenshot, service_thread, wait_dom
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from service_helpers import port_range

from llamasup.testing.poll import poll_until

pytestmark = pytest.mark.e2e


def _profile(tmp_path: Path, binary: Path, model: Path) -> Path:
    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"""\
version: 1
server:
  binary: {binary}
  ports: {port_range()}
  state_dir: {tmp_path / "state"}
  start_timeout: 60s
  base_args: [--ctx-size, 512, --parallel, 1]
models:
  tiny:
    path: {model}
    preload: true
"""
    )
    return profile


def test_the_dashboard_shows_and_drives_a_real_sidecar(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path
) -> None:
    profile = _profile(tmp_path, llama_server_bin, tiny_model)
    with service_thread(profile) as served, chromium() as driver:

        def ready_pid() -> int | None:
            rows = served.status()["sidecars"]
            return next((r["pid"] for r in rows if r["state"] == "ready"), None)

        pid = poll_until(ready_pid, timeout=60, what="the tiny model ready")
        driver.get(served.url + "/ui/")

        def tiny_row(driver: WebDriver) -> WebElement | None:
            rows = driver.find_elements(By.CSS_SELECTOR, "#sidecars tbody tr[data-state=ready]")
            return rows[0] if rows else None

        row = wait_dom(driver, tiny_row, "the real sidecar on the page")
        assert row is not None and str(pid) in row.text and "tiny" in row.text
        driver.find_element(By.ID, "tab-playground").click()
        model = driver.find_element(By.ID, "chat-model")
        wait_dom(driver, lambda d: "tiny" in model.text, "the model list")
        limit = driver.find_element(By.ID, "chat-max")
        limit.clear()
        limit.send_keys("12")
        driver.find_element(By.ID, "chat-send").click()
        output = driver.find_element(By.ID, "chat-output")
        wait_dom(driver, lambda d: output.get_attribute("data-done") == "true", "the answer", 60)
        assert int(output.get_attribute("data-chunks") or 0) >= 2, driver.find_element(
            By.ID, "chat-state"
        ).text
        # llama-server's own timings, from the stream's last chunk
        assert "(server)" in driver.find_element(By.ID, "stat-ttft").text
        assert "tokens/s" in driver.find_element(By.ID, "stat-tps").text
        assert "out" in driver.find_element(By.ID, "stat-tokens").text
        screenshot(driver, "e2e-playground")
        driver.find_element(By.ID, "tab-overview").click()
        row = wait_dom(driver, tiny_row, "the sidecar again")
        assert row is not None
        row.find_element(By.CSS_SELECTOR, "button.danger").click()
        wait_dom(driver, lambda d: tiny_row(d) is None, "the sidecar unloaded")
        assert ready_pid() is None
