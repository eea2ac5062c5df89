"""The web console in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven by
Selenium), against the real broker and real paho-mqtt clients.

Run by `crates/edgemq/tests/console.rs` (the paho suite runner leaves this file out), or:

    EDGEMQ_BIN=target/debug/edgemq python3 -m pytest tests/python/test_console.py -q

Screenshots of each page go to a temporary directory; set
`EDGEMQ_CONSOLE_SCREENSHOTS=docs/console` to refresh the ones the documentation shows.
Every wait is an explicit Selenium wait for a concrete state of the page.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import AGAINST, ROOT, WAIT, uid

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as e:  # pragma: no cover - reported by console.rs as well
    raise SystemExit(f"selenium is required: python3 -m pip install selenium ({e})")

pytestmark = pytest.mark.skipif(AGAINST != "edgemq", reason="the console is edgemq's own")

CHROMIUM = os.environ.get("EDGEMQ_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EDGEMQ_CHROMEDRIVER", "/usr/bin/chromedriver")
ADMINISTRATIVE_ACTION = 0x98
TOKEN = "console-test-token-0123456789"


@pytest.fixture
def shots(tmp_path) -> Path:
    out = os.environ.get("EDGEMQ_CONSOLE_SCREENSHOTS")
    path = (ROOT / out) if out else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # containers and root: Chromium's sandbox needs namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,800",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The window size includes the browser's frame: pin the viewport itself to 1280×800.
    d.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def console_broker(start_broker, *args: str):
    """A broker with an admin port; returns (broker, console URL). The MQTT address is taken
    from the listener's own log line (the admin port also logs `listening`)."""
    b = start_broker("--in-memory", "--admin-listen", "127.0.0.1:0", *args)
    m = b.wait_log(r"admin port (?:listening|open).*\baddr=(\d+\.\d+\.\d+\.\d+:\d+)")
    url = f"http://{m.group(1)}/"
    m = b.wait_log(r"^(?!.*admin port).*\blistening\b.*\baddr=(\d+\.\d+\.\d+\.\d+):(\d+)")
    b.host, b.port = m.group(1), int(m.group(2))
    return b, url


def wait(d, timeout: float = WAIT) -> WebDriverWait:
    # A table is re-rendered as a whole: an element found just before may be replaced.
    return WebDriverWait(d, timeout, ignored_exceptions=(StaleElementReferenceException,))


# Find the cell in one script run, so a re-render cannot come in between.
FIND_CELL = """
for (const td of document.querySelectorAll('#' + arguments[0] + ' tbody td'))
  if (td.textContent === arguments[1]) return td;
return null;
"""


def cell(d, table: str, text: str):
    """Wait for a cell of `table` whose text is exactly `text`."""
    return wait(d).until(
        lambda d: d.execute_script(FIND_CELL, table, text) or False, f"no cell {text!r} in #{table}"
    )


def no_cell(d, table: str, text: str, form: str) -> None:
    """Wait until `table` has no cell `text`, reloading it with `form` (the broker may finish
    the removal just after the page's own reload)."""

    def gone(d):
        if d.execute_script(FIND_CELL, table, text) is None:
            return True
        d.find_element(By.CSS_SELECTOR, f"#{form} button[type=submit]").click()
        return False

    wait(d).until(gone, f"cell {text!r} still in #{table}")


def tab(d, name: str) -> None:
    d.find_element(By.CSS_SELECTOR, f'#tabs a[data-tab="{name}"]').click()
    wait(d).until(EC.visibility_of_element_located((By.ID, f"page-{name}")))


def click_and_confirm(d, element) -> None:
    element.click()
    wait(d).until(EC.alert_is_present()).accept()


def samples(d) -> int:
    """How many overview samples the connections chart has drawn."""
    return d.execute_script(
        "const p = document.querySelector('#chart-connections polyline');"
        "return p ? p.getAttribute('points').trim().split(' ').length : 0;"
    )


def card(d, label: str) -> str:
    return d.execute_script(
        "for (const c of document.querySelectorAll('#cards .card'))"
        "  if (c.querySelector('.label').textContent === arguments[0])"
        "    return c.querySelector('.value').textContent;"
        "return null;",
        label,
    )


def test_console_pages_and_disconnect(start_broker, driver, shots):
    b, url = console_broker(start_broker)
    d = driver

    # Client-controlled strings carry markup: the page must show it as text.
    cid = uid("console") + "/<b>bold</b>"
    sub = b.client(cid)
    sub.subscribe("console/+/status", qos=1, subscription_id=7)
    offline_id = uid("offline")
    off = b.client(offline_id, clean=False, session_expiry=3600)
    off.subscribe("console/offline/#", qos=2)
    off.disconnect()
    topic = f"console/{uid('t')}/<img src=x onerror=alert(1)>"
    pub = b.client()
    pub.publish(topic, b"21.5 <script>alert(2)</script>", qos=1, retain=True)
    pub.publish("console/other/status", b"ok", qos=1, retain=True)

    d.get(url)
    wait(d).until(lambda d: card(d, "Clients connected") == "2", "overview never showed 2 clients")

    def traffic_until_drawn(d):
        # Some traffic while the page samples, so the message chart has something to show.
        pub.publish("console/live/status", b"tick", qos=1)
        return samples(d) >= 6

    wait(d, 30).until(traffic_until_drawn, "the charts never drew 6 samples")
    assert d.find_elements(By.CSS_SELECTOR, "#chart-messages polyline")
    assert d.find_elements(By.CSS_SELECTOR, "#chart-drops polyline")
    d.save_screenshot(str(shots / "overview.png"))

    tab(d, "clients")
    id_cell = cell(d, "clients-table", cid)
    assert not d.find_elements(By.CSS_SELECTOR, "#clients-table b"), "a client id was rendered as markup"
    id_cell.click()
    wait(d).until(
        lambda d: '"subscriptions"' in d.find_element(By.ID, "client-detail-body").text,
        "the client's state was never shown",
    )
    state = json.loads(d.find_element(By.ID, "client-detail-body").text)["state"]
    assert [s["filter"] for s in state["subscriptions"]] == ["console/+/status"]
    assert "queued" in state and "inflight" in state
    d.save_screenshot(str(shots / "clients.png"))

    tab(d, "sessions")
    cell(d, "sessions-table", cid)
    offline_row = cell(d, "sessions-table", offline_id).find_element(By.XPATH, "..")
    assert "offline" in offline_row.text
    d.save_screenshot(str(shots / "sessions.png"))

    tab(d, "subscriptions")
    cell(d, "subscriptions-table", "console/+/status")
    cell(d, "subscriptions-table", "console/offline/#")
    d.save_screenshot(str(shots / "subscriptions.png"))

    tab(d, "retained")
    target = cell(d, "retained-table", topic).find_element(By.XPATH, "..")
    cell(d, "retained-table", "21.5 <script>alert(2)</script>")
    assert not d.find_elements(By.CSS_SELECTOR, "#retained-table img"), "a topic was rendered as markup"
    d.save_screenshot(str(shots / "retained.png"))
    click_and_confirm(d, target.find_element(By.CSS_SELECTOR, "button.delete-retained"))
    no_cell(d, "retained-table", topic, "retained-form")
    cell(d, "retained-table", "console/other/status")

    tab(d, "listeners")
    cell(d, "listeners-table", f"{b.host}:{b.port}")
    cell(d, "listeners-table", "mqtt")
    cell(d, "listeners-table", "anonymous (no authentication)")
    d.save_screenshot(str(shots / "listeners.png"))

    tab(d, "health")
    wait(d).until(lambda d: d.find_element(By.ID, "ready").text == "Ready", "readiness never shown")
    cell(d, "health-table", "listeners_bound")
    wait(d).until(
        lambda d: d.find_element(By.ID, "config-source").text == "command line", "configuration never shown"
    )
    assert d.find_element(By.ID, "config-outcome").text == "applied"
    cell(d, "config-table", "none")
    assert d.find_element(By.ID, "error").text == "", d.find_element(By.ID, "error").text
    d.save_screenshot(str(shots / "health.png"))

    # End the offline session from the page.
    tab(d, "sessions")
    offline_row = cell(d, "sessions-table", offline_id).find_element(By.XPATH, "..")
    click_and_confirm(d, offline_row.find_element(By.CSS_SELECTOR, "button.end-session"))
    no_cell(d, "sessions-table", offline_id, "sessions-form")

    # Disconnect from the page: the client gets DISCONNECT 0x98 Administrative action.
    tab(d, "clients")
    row = cell(d, "clients-table", cid).find_element(By.XPATH, "..")
    click_and_confirm(d, row.find_element(By.CSS_SELECTOR, "button.disconnect"))
    gone = sub.wait_disconnect()
    assert gone.from_server, "the connection closed without a DISCONNECT packet"
    assert gone.reason == ADMINISTRATIVE_ACTION, f"DISCONNECT reason 0x{gone.reason:02X}"
    no_cell(d, "clients-table", cid, "clients-form")
    assert d.find_element(By.ID, "error").text == ""


def test_console_token_login(start_broker, driver, shots, tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    b, url = console_broker(start_broker, "--admin-token-file", str(token_file))
    d = driver

    # The API itself refuses a request without the token.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url + "api/v1/overview", timeout=WAIT)
    assert refused.value.code == 401

    cid = uid("tok")
    b.client(cid)
    d.get(url + "#clients")
    login = wait(d).until(EC.visibility_of_element_located((By.ID, "login")))
    assert login.find_element(By.ID, "token").get_attribute("type") == "password"
    d.save_screenshot(str(shots / "login.png"))

    d.find_element(By.ID, "token").send_keys("not-the-token-at-all")
    d.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait(d).until(
        lambda d: re.search("not accepted", d.find_element(By.ID, "login-error").text),
        "a wrong token was not refused",
    )

    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait(d).until(EC.invisibility_of_element_located((By.ID, "login")))
    cell(d, "clients-table", cid)
    assert d.execute_script("return sessionStorage.getItem('edgemq-admin-token')") == TOKEN

    # The token survives a reload of the tab (sessionStorage): no second login.
    d.refresh()
    cell(d, "clients-table", cid)
    assert not d.find_element(By.ID, "login").is_displayed()
