"""
The status page in a real browser: headless Chromium driven by Selenium logs
in, finds a deferred message by recipient, holds and releases it, terminates
an SMTP session, and takes a screenshot of the overview.

Selenium blocks, so the browser is driven from a thread while the reactor
serves the page. Every wait is on a real condition (the old page gone and the
new one loaded, the server's state reached) with a bound far above what a
loaded machine needs: on 2 busy cores (load average 20) one run took 50 s,
each page about 3.5 s, where an idle machine takes 10 s in all.

With C{SMTPD_SCREENSHOT=docs/status-page.png} the screenshot is written
there (the README shows it); else into the test's folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import threads
from twisted.trial import unittest

from smtpd.admin.api import Admin
from tests import support
from tests.admin_support import OPERATOR, PASSWORD, eventually
from tests.engines import find_engine, skip_unless
from tests.inbound import connect
from tests.web_support import base_url, send, start_web_server

# Seconds a page may take to load (a bound for failures, not a pause).
PAGE_WAIT = 120


def chromium(user_data: str):
    """A headless Chromium under chromedriver (no network, a throwaway profile)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = find_engine("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={user_data}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(find_engine("chromedriver")))
    driver.set_page_load_timeout(PAGE_WAIT)
    return driver


def state_of(driver, queue_id: str) -> str:
    """The state column of an entry in the queue table."""
    from selenium.webdriver.common.by import By

    link = driver.find_element(By.LINK_TEXT, queue_id)
    row = link.find_element(By.XPATH, "./ancestor::tr")
    return row.find_elements(By.TAG_NAME, "td")[2].text


def click(driver, by, value: str) -> None:
    """
    Click an element that loads a new page, and wait until the old page is
    gone and the new one completely loaded.
    """
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        WebDriverException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    element = driver.find_element(by, value)
    element.click()

    def gone(_driver) -> bool:
        # Chromium reports an element of a page that was replaced either as
        # stale or, while the new document loads, as "node does not belong
        # to the document": as no such element, or (its inspector caught
        # mid-navigation) as an "unknown error" with that text. All of them
        # mean the old page is gone; any other error is a real one.
        try:
            element.is_enabled()
        except (StaleElementReferenceException, NoSuchElementException):
            return True
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return True
            raise
        return False

    wait = WebDriverWait(driver, PAGE_WAIT)
    wait.until(gone)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


class BrowserTests(unittest.TestCase):
    """The status page in headless Chromium."""

    skip = skip_unless("chromium", "chromedriver")
    # The browser's steps on a loaded machine (see the module's docstring).
    timeout = 400

    async def test_hold_release_terminate(self):
        """
        Logged in through the form, the operator searches the queue for the
        deferred message's recipient, holds it (the page says held, the
        queue has it held), releases it, and terminates an open SMTP session
        (the client reads 421 4.3.2).
        """
        script = support.SinkScript(rcpt={"busy@remote.test": "451 4.2.0 mailbox busy"})
        sink = support.start_smtp_sink(self, "127.0.0.1", script=script)
        server = start_web_server(self, sink.port, "login = yes\n")
        admin = Admin(server.top.admin.server, "tester")
        await send(self, server.smtp_port(), b"a@localhost", b"other@remote.test")
        wanted = await send(self, server.smtp_port(), b"a@localhost", b"busy@remote.test")
        await eventually(lambda: admin.status()["queue"]["deferred"] == 1, timeout=60)
        client = await connect(self, server.smtp_port())
        await client.command(b"EHLO watched.test\r\n")
        # The sessions that sent the messages are gone once their QUIT is done.
        await eventually(lambda: len(admin.sessions()) == 1, timeout=60)
        [session] = admin.sessions()
        profile = tempfile.mkdtemp(prefix="chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        shot = os.environ.get("SMTPD_SCREENSHOT") or os.path.abspath("status-page.png")
        seen = await threads.deferToThread(self.drive, base_url(server), wanted,
                                           session["id"], profile, shot)
        self.assertEqual(seen["after_search"], [wanted])
        self.assertEqual(seen["held"], "held")
        self.assertIn(seen["released"], ("queued", "deferred"))
        self.assertIn(b"watched.test", seen["overview"].encode())
        reply = (await client.wait(3))[2]
        self.assertTrue(reply.startswith("421 4.3.2 "), reply)
        await eventually(lambda: admin.sessions() == [], timeout=60)
        await eventually(lambda: admin.status()["queue"]["held"] == 0, timeout=60)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def drive(self, url: str, wanted: str, session_id: int, profile: str, shot: str) -> dict:
        """The browser's part (in a thread): what it saw at each step."""
        from selenium.webdriver.common.by import By

        driver = chromium(profile)
        seen = {}
        try:
            driver.get(url + "/")
            driver.find_element(By.ID, "name").send_keys(OPERATOR)
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            click(driver, By.ID, "login")
            seen["overview"] = driver.find_element(By.ID, "sessions").text
            driver.save_screenshot(shot)
            click(driver, By.LINK_TEXT, "Queue")
            driver.find_element(By.ID, "q").send_keys("busy@remote.test")
            click(driver, By.ID, "search")
            table = driver.find_element(By.ID, "queue")
            seen["after_search"] = [a.text for a in table.find_elements(By.TAG_NAME, "a")]
            click(driver, By.ID, f"hold-{wanted}")
            seen["held"] = state_of(driver, wanted)
            click(driver, By.ID, f"release-{wanted}")
            seen["released"] = state_of(driver, wanted)
            click(driver, By.LINK_TEXT, "Overview")
            click(driver, By.ID, f"terminate-{session_id}")
        finally:
            driver.quit()
        return seen
