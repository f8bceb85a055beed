"""The dashboard in a real browser: headless Chromium (Debian's) driven by Selenium, against a
llamasup whose sidecars are the fake llama-server (the real-model test is in
``tests/e2e/test_dashboard_e2e.py``).

One browser serves the module; every test starts from no cookies. Every wait is a DOM
condition with a deadline. Each view is saved as a screenshot in ``test-artifacts/ui/``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browser_helpers import (
    PHONE,
    ThreadedService,
    chromium,
    fresh,
    js,
    screenshot,
    service_thread,
    wait_dom,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from service_helpers import fake_profile, write_model_files

from llamasup.testing.poll import poll_until

ADMIN_KEY = "dashboard-admin-key-0123456789"
APP_KEY = "dashboard-inference-key-0123456789"
KEYS = (
    "api_keys:\n"
    "  - {name: ops, env: DASH_ADMIN_KEY, scope: admin}\n"
    "  - {name: app, env: DASH_APP_KEY, scope: inference}"
)
#: the fake streams a piece every 40 ms: a stream the page can be seen to follow
SLOW_STREAM = "env: {FAKE_LLAMA_STREAM_DELAY: '0.04', FAKE_LLAMA_TOKENS: '12'}"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def driver(browser: WebDriver) -> WebDriver:
    fresh(browser)
    return browser


def _profile(tmp_path: Path, fake_bin: Path, server_extra: str = "") -> Path:
    write_model_files(tmp_path, ["alpha", "beta"])
    profile = tmp_path / "p.yaml"
    models = {"alpha": f"pinned: true\nmemory: 300MiB\n{SLOW_STREAM}", "beta": "memory: 200MiB"}
    extra = "memory_budget: 2GiB\nmax_sidecars: 2\n" + server_extra
    text = fake_profile(fake_bin, tmp_path / "state", models, server_extra=extra)
    profile.write_text(text + "agents:\n  coder:\n    model: alpha\n    flags: --temp 0.2\n")
    return profile


def _row(driver: WebDriver, model: str, state: str | None = None) -> WebElement | None:
    """The sidecar row of ``model`` (in ``state``), if the page shows one."""
    for row in driver.find_elements(By.CSS_SELECTOR, "#sidecars tbody tr"):
        if row.find_element(By.CSS_SELECTOR, ".model").text == model and (
            state is None or row.get_attribute("data-state") == state
        ):
            return row
    return None


def _wait_row(driver: WebDriver, model: str, what: str) -> WebElement:
    """The row of ``model`` once the page shows it ready."""
    found: WebElement | None = wait_dom(driver, lambda d: _row(d, model, "ready"), what)
    assert found is not None
    return found


def _ready_pid(served: ThreadedService, model: str) -> int:
    def ready() -> int | None:
        rows = served.status(headers={"authorization": f"Bearer {ADMIN_KEY}"})["sidecars"]
        pids = [r["pid"] for r in rows if r["model"] == model and r["state"] == "ready"]
        return pids[0] if pids else None

    return poll_until(ready, timeout=20, what=f"{model} ready")


def _chat(served: ThreadedService, model: str) -> None:
    body = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    served.client.post("/v1/chat/completions", json=body).raise_for_status()


def _streaming(output: WebElement) -> bool:
    """Pieces of the answer are shown and it has not ended."""
    chunks = int(output.get_attribute("data-chunks") or 0)
    return output.get_attribute("data-done") == "false" and chunks >= 2


def _open(driver: WebDriver, served: ThreadedService) -> None:
    driver.get(served.url + "/ui/")
    live = wait_dom(driver, lambda d: d.find_element(By.ID, "live"), "the page")
    wait_dom(driver, lambda d: live.get_attribute("data-state") != "connecting", "it to start")


def test_overview_follows_a_sidecar_and_unloads_it(
    tmp_path: Path, fake_server_bin: Path, driver: WebDriver
) -> None:
    profile = _profile(tmp_path, fake_server_bin)
    with service_thread(profile) as served:
        pid = _ready_pid(served, "alpha")
        _open(driver, served)
        row = _wait_row(driver, "alpha", "alpha ready on the page")
        assert str(pid) in row.text
        assert "300 MiB of 2.0 GiB" in row.text
        assert "pinned" in row.text
        assert "1 running (at most 2)" in driver.find_element(By.ID, "limits-running").text
        assert "startup · ok" in driver.find_element(By.ID, "reload-summary").text
        passes = driver.find_element(By.ID, "passes").text
        assert "start alpha (pinned)" in passes
        screenshot(driver, "overview")
        # keyboard: the tabs are one tab stop, arrows move between them
        driver.find_element(By.ID, "tab-overview").send_keys(Keys.ARROW_RIGHT)
        assert driver.switch_to.active_element.get_attribute("id") == "tab-logs"
        assert driver.find_element(By.ID, "view-logs").is_displayed()
        driver.switch_to.active_element.send_keys(Keys.HOME)
        assert driver.find_element(By.ID, "view-overview").is_displayed()
        # started by a request, stopped by someone else: the page follows (server-sent
        # events, no reload)
        _chat(served, "beta")
        _wait_row(driver, "beta", "beta ready on the page")
        served.client.post("/api/unload", json={"model": "beta"}).raise_for_status()
        wait_dom(driver, lambda d: _row(d, "beta", "ready") is None, "beta no longer ready")
        # started again; then unloaded with the page's own button
        _chat(served, "beta")
        beta = _wait_row(driver, "beta", "beta ready again")
        beta.find_element(By.CSS_SELECTOR, "button.danger").click()
        wait_dom(driver, lambda d: _row(d, "beta", "ready") is None, "beta unloaded")
        assert "Unload beta: stopped beta" in driver.find_element(By.ID, "notice").text
        assert not [r for r in served.status()["sidecars"] if r["model"] == "beta" and r["pid"]]
        assert _row(driver, "alpha", "ready") is not None
        # phone width, dark theme: still one readable card per sidecar
        driver.set_window_size(*PHONE)
        theme = driver.find_element(By.ID, "theme")
        theme.click()
        theme.click()
        assert js(driver, "return document.documentElement.dataset.theme") == "dark"
        width = js(driver, "return document.documentElement.scrollWidth")
        assert width <= PHONE[0], "the page scrolls sideways on a phone"
        screenshot(driver, "overview-phone-dark")


def test_logs_follow_a_sidecar(tmp_path: Path, fake_server_bin: Path, driver: WebDriver) -> None:
    profile = _profile(tmp_path, fake_server_bin)
    with service_thread(profile) as served:
        _ready_pid(served, "alpha")
        _open(driver, served)
        row = _wait_row(driver, "alpha", "alpha on the page")
        row.find_element(By.XPATH, ".//button[text()='Logs']").click()
        log = driver.find_element(By.ID, "log")
        wait_dom(driver, lambda d: "ready on port" in log.text, "the log's history")
        assert "processing task" not in log.text
        _chat(served, "alpha")
        wait_dom(driver, lambda d: "processing task" in log.text, "the request's log line")
        assert int(log.get_attribute("data-lines") or 0) <= 2000
        screenshot(driver, "logs")


def test_profile_editor_shows_errors_on_their_lines_then_the_diff_then_applies(
    tmp_path: Path, fake_server_bin: Path, driver: WebDriver
) -> None:
    profile = _profile(tmp_path, fake_server_bin)
    with service_thread(profile) as served:
        _open(driver, served)
        driver.find_element(By.ID, "tab-profiles").click()
        text = driver.find_element(By.ID, "profile-text")
        wait_dom(driver, lambda d: "models:" in (text.get_attribute("value") or ""), "the file")
        original = text.get_attribute("value") or ""
        lines = original.splitlines()
        at = lines.index("  beta:") + 1
        bad = [*lines[:at], "    pinned: maybe", *lines[at:]]
        _set_text(driver, text, "\n".join(bad) + "\n")
        driver.find_element(By.ID, "profile-diff").click()
        marked = wait_dom(
            driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#gutter .err"), "an error mark"
        )
        assert marked[0].get_attribute("data-line") == str(at + 1)
        listed = driver.find_element(By.ID, "profile-errors").text
        assert f"p.yaml:{at + 1}: models.beta.pinned:" in listed
        assert driver.find_element(By.ID, "profile-apply").get_attribute("disabled") is not None
        screenshot(driver, "profiles-error")
        driver.find_element(By.CSS_SELECTOR, "#profile-errors button").click()
        assert driver.switch_to.active_element == text  # the error button goes to its line
        good = [*lines[:at], "    pinned: true", *lines[at:]]
        _set_text(driver, text, "\n".join(good) + "\n")
        driver.find_element(By.ID, "profile-diff").click()
        plan = driver.find_element(By.ID, "profile-plan")
        wait_dom(driver, lambda d: "would change" in plan.text, "the dry run")
        assert "updated (settings only): beta" in plan.text
        assert "start" in plan.text and "beta" in plan.text
        assert "+     pinned: true" in driver.find_element(By.ID, "profile-textdiff").text
        assert not driver.find_elements(By.CSS_SELECTOR, "#gutter .err")
        assert "pinned: true" not in profile.read_text().split("beta:")[1]  # a dry run
        screenshot(driver, "profiles-diff")
        driver.find_element(By.ID, "profile-apply").click()
        wait_dom(driver, lambda d: "Applied" in plan.text, "the apply")
        assert "pinned: true" in profile.read_text().split("beta:")[1]
        _ready_pid(served, "beta")


def _set_text(driver: WebDriver, area: WebElement, value: str) -> None:
    """Replace a textarea's text as typing would (an input event follows)."""
    script = "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))"
    js(driver, script, area, value)


def test_playground_streams_and_shows_timings(
    tmp_path: Path, fake_server_bin: Path, driver: WebDriver
) -> None:
    profile = _profile(tmp_path, fake_server_bin)
    with service_thread(profile) as served:
        _ready_pid(served, "alpha")
        _open(driver, served)
        driver.find_element(By.ID, "tab-playground").click()
        model = driver.find_element(By.ID, "chat-model")
        wait_dom(driver, lambda d: "alpha@coder" in model.text, "the model list")
        js(driver, "arguments[0].value = 'alpha@coder'", model)
        driver.find_element(By.ID, "chat-send").click()
        output = driver.find_element(By.ID, "chat-output")
        # seen while it streams: some pieces shown, the answer not done yet
        wait_dom(driver, lambda d: _streaming(output), "the first pieces")
        wait_dom(driver, lambda d: output.get_attribute("data-done") == "true", "the end")
        assert output.text.startswith("t0 t1 t2")
        assert int(output.get_attribute("data-chunks") or 0) == 12
        assert "tokens/s" in driver.find_element(By.ID, "stat-tps").text
        assert "(server)" in driver.find_element(By.ID, "stat-ttft").text
        assert "12 out" in driver.find_element(By.ID, "stat-tokens").text
        screenshot(driver, "playground")


def test_with_keys_the_page_asks_for_one_and_scopes_what_it_shows(
    tmp_path: Path, fake_server_bin: Path, driver: WebDriver
) -> None:
    profile = _profile(tmp_path, fake_server_bin, KEYS)
    environ = {"DASH_ADMIN_KEY": ADMIN_KEY, "DASH_APP_KEY": APP_KEY}
    with service_thread(profile, environ=environ) as served:
        driver.get(served.url + "/ui/")
        key = wait_dom(driver, lambda d: d.find_element(By.ID, "login-key"), "the login form")
        wait_dom(driver, lambda d: key.is_displayed(), "the login form shown")
        screenshot(driver, "login")
        key.send_keys("not-a-key", Keys.ENTER)
        error = driver.find_element(By.ID, "login-error")
        wait_dom(driver, lambda d: "invalid API key" in error.text, "the refusal")
        key.clear()
        key.send_keys(APP_KEY, Keys.ENTER)
        models = driver.find_element(By.ID, "models")
        wait_dom(driver, lambda d: "alpha" in models.text, "the model list (inference key)")
        assert not driver.find_element(By.ID, "tab-logs").is_displayed()
        assert not driver.find_element(By.ID, "admin-overview").is_displayed()
        assert driver.find_element(By.ID, "tab-playground").is_displayed()
        assert APP_KEY not in driver.page_source
        assert js(driver, "return document.cookie") == ""  # HttpOnly: scripts cannot read it
        driver.find_element(By.ID, "logout").click()
        key = wait_dom(driver, lambda d: d.find_element(By.ID, "login-key"), "the login form")
        wait_dom(driver, lambda d: key.is_displayed(), "the login form again")
        key.send_keys(ADMIN_KEY, Keys.ENTER)
        pid = _ready_pid(served, "alpha")
        row = _wait_row(driver, "alpha", "alpha (admin key)")
        row.find_element(By.CSS_SELECTOR, "button.danger").click()
        notice = driver.find_element(By.ID, "notice")
        wait_dom(driver, lambda d: "Unload alpha: stopped alpha" in notice.text, "the unload")
        assert _ready_pid(served, "alpha") != pid  # pinned: it comes back as a new process
        assert ADMIN_KEY not in driver.page_source
        storage = js(driver, "return JSON.stringify([{...localStorage}, {...sessionStorage}])")
        assert ADMIN_KEY not in storage and APP_KEY not in storage


#: the attacker's page: every way a page can try to drive or read llamasup ({target}: its URL)
EVIL_PAGE = (Path(__file__).parent / "cross_origin_page.html").read_text()


@pytest.fixture
def evil_site() -> Iterator[tuple[ThreadingHTTPServer, list[str]]]:
    """A page on another port of 127.0.0.1: another origin, but the same site (so the
    browser sends it SameSite=Strict cookies: the hardest case)."""
    page: list[str] = [""]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page[0].encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, page
    finally:
        server.shutdown()
        server.server_close()


def test_a_cross_origin_page_cannot_trigger_an_action(
    tmp_path: Path,
    fake_server_bin: Path,
    driver: WebDriver,
    evil_site: tuple[ThreadingHTTPServer, list[str]],
) -> None:
    """No keys (the weakest setting) and a live dashboard session in the same browser."""
    server, page = evil_site
    profile = _profile(tmp_path, fake_server_bin)
    original = profile.read_text()
    with service_thread(profile) as served:
        pid = _ready_pid(served, "alpha")
        _open(driver, served)
        wait_dom(driver, lambda d: _row(d, "alpha", "ready"), "the dashboard, logged in")
        page[0] = EVIL_PAGE.format(target=served.url)
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        log = driver.find_element(By.ID, "log")
        wait_dom(driver, lambda d: "done" in log.text, "the attack to run")
        text = log.text
        assert "read-status: blocked TypeError" in text  # no CORS grant: nothing readable
        assert "read-session: blocked TypeError" in text
        assert "json-post: blocked TypeError" in text  # its preflight is refused
        # the framed dashboard is refused (X-Frame-Options DENY, frame-ancestors 'none')
        driver.switch_to.frame(driver.find_element(By.ID, "framed"))
        assert not driver.find_elements(By.ID, "sidecars")
        driver.switch_to.default_content()
        # the form post landed on a refusal
        driver.switch_to.frame("sink")
        wait_dom(driver, lambda d: "forbidden_origin" in d.page_source, "the form's answer")
        driver.switch_to.default_content()
        # every attempt has been answered (the page awaited each): nothing changed
        assert _ready_pid(served, "alpha") == pid
        assert profile.read_text() == original
