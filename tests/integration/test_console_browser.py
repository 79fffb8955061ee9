"""The console in a real browser (issue 14): Debian's headless Chromium, driven by Playwright for Python,
against the real service on a real database, and for Run now the engine sending to the stand-in push API.

Each test goes through a user's path and waits for what it checks with Playwright's auto-waiting `expect`,
never a fixed sleep. Each screen is saved as a PNG under .data/console-screenshots/ (ignored by git): the
artefacts to look at when a test fails, and the README's two pictures.

Chromium comes from the system (`apt-get install chromium`), never from Playwright's own download. Where it
is missing the tests skip, saying so, unless CI or REQUIRE_BROWSER is set (.ci/run sets it and installs
Chromium first): there they fail, so CI never passes without having run them.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import re
import shutil
import zoneinfo
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import Api, Service, engine_settings, future_time, schedule_body, start_service
from tests.standin import StandIn

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_REQUIRED = bool(os.environ.get("CI") or os.environ.get("REQUIRE_BROWSER"))
# As root and on a machine without network: no sandbox (root cannot have one), and none of Chromium's own
# background calls (updates, sync, field trials) that would only fail and slow the start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]
SCREENSHOTS = pathlib.Path(__file__).resolve().parents[2] / ".data" / "console-screenshots"
DESKTOP = {"width": 1200, "height": 860}
PHONE = {"width": 390, "height": 844}
ZONE = "America/New_York"


def browser_problem() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not pathlib.Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: `apt-get install chromium` (or set CHROMIUM_PATH)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: `pip install -e '.[test]'`"
    return None


class Browser:
    """One page in a fresh Chromium, recording what would mean a broken page: a script error, or any console
    error other than the browser's own line for an HTTP error answer (a 401 or 400 the test asked for)."""

    def __init__(self, page: Any, test_name: str) -> None:
        self.page = page
        self.test_name = test_name
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {message.text}")  # a CSP refusal lands here too

    async def screenshot(self, name: str, *, full_page: bool = True) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


@pytest.fixture
async def browser(request: pytest.FixtureRequest) -> AsyncIterator[Browser]:
    problem = browser_problem()
    if problem is not None:
        if BROWSER_REQUIRED:
            pytest.fail(f"the browser tests must run here (CI or REQUIRE_BROWSER is set): {problem}")
        pytest.skip(f"browser tests skipped: {problem}")
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=10_000)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await chromium.new_context(viewport=DESKTOP, locale="en-GB")
            page = await context.new_page()
            opened = Browser(page, request.node.name)
            yield opened
            assert opened.problems == [], opened.problems
        finally:
            await chromium.close()


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def sign_in(browser: Browser, base_url: str, api: Api) -> None:
    page = browser.page
    await page.goto(base_url + "/console/")
    await page.get_by_label("App key").fill(api.auth.app_key)
    await page.get_by_label("Master secret").fill(api.auth.master_secret)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()


def wall_in(zone: str, instant: dt.datetime) -> str:
    return instant.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


async def row_names(page: Any) -> list[str]:
    return [text.strip() for text in await page.locator("table.tasks tbody tr td:first-child").all_inner_texts()]


# -- sign in, then build a one-time and a cron task --------------------------------------------------------------


async def test_sign_in_then_create_a_one_time_and_a_cron_task_through_the_builder(
    service: Service, browser: Browser
) -> None:
    api = await service.new_app(time_zone=ZONE)
    page = browser.page
    # /console (no slash) leads to the page.
    await page.goto(service.base_url + "/console")
    await page.get_by_label("App key").fill(api.auth.app_key)
    await page.get_by_label("Master secret").fill("not-the-secret")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("Basic authentication failed.")
    await browser.screenshot("01-sign-in-refused")

    # The right secret, by keyboard: Enter submits the form.
    await page.get_by_label("Master secret").fill(api.auth.master_secret)
    await page.get_by_label("Master secret").press("Enter")
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    await expect(page.get_by_text("No tasks yet")).to_be_visible()
    await expect(page.locator("#who")).to_contain_text(ZONE)
    # The secret is in this tab's sessionStorage only: no cookie, nothing in localStorage.
    stored = await page.evaluate("() => [sessionStorage.length, localStorage.length, document.cookie]")
    assert stored == [1, 0, ""]
    await browser.screenshot("02-empty-list")

    # A one-time task: the builder's preview shows its one fire, in the app's zone with UTC on hover.
    await page.get_by_role("link", name="New task").click()
    await expect(page.get_by_role("heading", name="New task")).to_be_visible()
    fire = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).astimezone(zoneinfo.ZoneInfo(ZONE))
    fire = fire.replace(hour=9, minute=30, second=0, microsecond=0)
    await page.get_by_label("Name", exact=True).fill("morning hello")
    await page.get_by_label("Description (optional)").fill("Says hello at half past nine")
    await page.get_by_label("Date and time").fill(fire.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_label("Alert text").fill("Good morning")
    preview = page.locator(".preview .fires li")
    await expect(preview).to_have_count(1)
    await expect(preview.first).to_have_text(fire.strftime("%Y-%m-%d 09:30:00"))
    await expect(preview.first.locator("time")).to_have_attribute("title", wall_in("UTC", fire) + " UTC")
    await browser.screenshot("03-new-one-time-task")
    await page.get_by_role("button", name="Create task").click()
    await expect(page.get_by_role("heading", name="morning hello")).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="Created")).to_contain_text("morning hello")
    await browser.screenshot("04-task-created")

    # A cron task: an expression that never fires is refused, beside the field the API's message names.
    await page.get_by_role("link", name="Tasks").first.click()
    await page.get_by_role("link", name="New task").click()
    # Every mode of the builder previews: Recurring (by month, on the 15th), Interval, then Cron.
    await page.get_by_role("radio", name="Recurring").check()
    await expect(preview).to_have_count(5)
    recurring = page.get_by_role("group", name="Recurring")
    await recurring.get_by_label("Unit").select_option("month")
    await recurring.get_by_role("checkbox", name="15", exact=True).check()
    await expect(preview).to_have_text([re.compile(r"-15 09:00:00$")] * 5)
    await page.get_by_role("radio", name="Interval").check()
    await expect(preview).to_have_count(5)
    await page.get_by_role("radio", name="Cron").check()
    expression = page.get_by_label("Cron expression")
    await expression.fill("0 0 30 2 *")
    error = page.locator(".field-error").filter(has_text="trigger.cron.expression")
    await expect(error).to_contain_text("never fires")
    await expect(expression).to_have_attribute("aria-invalid", "true")
    await expression.fill("30 8 * * MON-FRI")
    await expect(error).to_be_hidden()
    await expect(preview).to_have_count(5)
    await expect(preview.first).to_contain_text(" 08:30:00")
    await page.get_by_label("Alert text").fill("Today's digest")
    # A save the API refuses shows its error beside the field too, and nothing is created.
    await page.get_by_label("Name", exact=True).fill("digest/weekdays")
    await page.get_by_role("button", name="Create task").click()
    await expect(page.locator(".field-error").filter(has_text="name:")).to_be_visible()
    await expect(page.get_by_label("Name", exact=True)).to_be_focused()
    await browser.screenshot("05-cron-task-builder")
    await page.get_by_label("Name", exact=True).fill("weekday digest")
    await page.get_by_role("button", name="Create task").click()
    await expect(page.get_by_role("heading", name="weekday digest")).to_be_visible()

    # Edit: the builder keeps the task's kind (the API cannot change it); the other fields change.
    await page.get_by_role("link", name="Edit").click()
    await expect(page.get_by_role("heading", name="Edit \u201cweekday digest\u201d")).to_be_visible()
    await expect(page.get_by_role("radio", name="Cron")).to_be_checked()
    await expect(page.get_by_role("radio", name="One-time")).to_be_disabled()
    await expect(preview).to_have_count(5)
    await page.get_by_label("Failures allowed").fill("3")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
    await expect(page.locator(".details")).to_contain_text("disables itself at 3")

    listed = (await api.list()).json["schedules"]
    assert [(task["name"], next(iter(task["trigger"]))) for task in listed] == [
        ("morning hello", "single"), ("weekday digest", "cron"),
    ]
    assert listed[0]["trigger"]["single"] == {"time": fire.strftime("%Y-%m-%d 09:30:00"), "zone_type": 1}
    assert listed[0]["description"] == "Says hello at half past nine"
    assert listed[1]["trigger"]["cron"] == {"expression": "30 8 * * MON-FRI", "zone_type": 1}
    assert listed[1]["max_failures"] == 3
    assert listed[1]["push"]["body"] == {"platform": "all", "notification": {"alert": "Today's digest"}}
    api.check_against_spec()


# -- the list: sort by next run, filter, phone width ---------------------------------------------------------------


async def test_the_list_sorts_by_next_run_and_filters_by_name(service: Service, browser: Browser) -> None:
    api = await service.new_app(time_zone=ZONE)
    zone = zoneinfo.ZoneInfo(ZONE)
    soon = (dt.datetime.now(zone) + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:00")
    for name, trigger in [
        ("alpha", {"single": {"time": future_time(3 * 3600, zone)}}),
        ("bravo", {"interval": {"start": soon, "every": 1, "unit": "day"}}),
        ("charlie", {"single": {"time": future_time(2 * 3600, zone)}}),
        ("delta", {"cron": {"expression": "0 0 1 1 *"}}),
        ("echo", {"single": {"time": future_time(4 * 3600, zone)}}),
    ]:
        created = await api.create(schedule_body(name=name, trigger=trigger))
        assert created.status == 200, created.json
        if name == "echo":  # disabled: no next run, so last in ascending order
            assert (await api.update(created.json["schedule_id"], {"enabled": False})).status == 200
    page = browser.page
    await sign_in(browser, service.base_url, api)
    await expect(page.locator("table.tasks tbody tr")).to_have_count(5)
    assert await row_names(page) == ["alpha", "bravo", "charlie", "delta", "echo"]  # oldest created first

    header = page.locator("th").filter(has=page.locator("button[data-sort=next_run]"))
    await page.get_by_role("button", name="Next run").click()
    await expect(header).to_have_attribute("aria-sort", "ascending")
    await expect(page.locator("table.tasks tbody tr td:first-child")).to_have_text(["bravo", "charlie", "alpha", "delta", "echo"])
    # The next run is shown in the app's zone, with UTC on hover.
    charlie = (await api.list()).json["schedules"][2]
    shown = page.locator("tr", has_text="charlie").locator("td.next-run time")
    await expect(shown).to_have_attribute("title", wall_in("UTC", dt.datetime.fromisoformat(charlie["next_run_at"])) + " UTC")
    await expect(shown).to_have_text(wall_in(ZONE, dt.datetime.fromisoformat(charlie["next_run_at"])))
    await browser.screenshot("06-list-sorted-by-next-run")

    # Again, by keyboard (the header redrawn keeps the focus): descending, disabled task first.
    await expect(page.get_by_role("button", name="Next run")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(header).to_have_attribute("aria-sort", "descending")
    await expect(page.locator("table.tasks tbody tr td:first-child")).to_have_text(["echo", "delta", "alpha", "charlie", "bravo"])
    assert "sort=-next_run" in page.url
    # The focus is visible to a keyboard user: Shift+Tab reaches the Name header, ringed.
    await page.keyboard.press("Shift+Tab")
    await expect(page.get_by_role("button", name="Name")).to_be_focused()
    ring = await page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert ring == "solid"

    await page.get_by_label("Name starts with").fill("ch")
    await expect(page.locator("table.tasks tbody tr td:first-child")).to_have_text(["charlie"])
    await page.get_by_label("Name starts with").fill("")
    await expect(page.locator("table.tasks tbody tr")).to_have_count(5)

    # At phone width the table becomes cards: nothing wider than the screen.
    await page.set_viewport_size(PHONE)
    await expect(page.locator("table.tasks tbody tr")).to_have_count(5)
    widths = await page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    await browser.screenshot("07-list-at-phone-width")
    api.check_against_spec()


# -- a task's page: run now, webhook, disable, delete ---------------------------------------------------------------


@pytest.fixture
async def quick_polling_service(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession
) -> Service:
    """The engine sending to the stand-in, and Retry-After: 1 on a run's status, so following it takes a second."""
    return await start_service(
        engine_settings(database_url, tmp_path, standin.url, run_poll_seconds=1), aiohttp_server, session
    )


async def test_run_now_then_webhook_disable_and_delete_from_the_task_page(
    quick_polling_service: Service, standin: StandIn, browser: Browser
) -> None:
    service = quick_polling_service
    api = await service.new_app(time_zone=ZONE)
    created = await api.create(schedule_body(name="nightly report", time=future_time(6 * 3600)))
    schedule_id = created.json["schedule_id"]
    page = browser.page
    await browser.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=service.base_url)
    await sign_in(browser, service.base_url, api)
    await page.get_by_role("link", name="nightly report").click()
    await expect(page.get_by_role("heading", name="nightly report")).to_be_visible()
    await expect(page.get_by_text("No run yet.")).to_be_visible()

    # Run now: the status follows the run's Location until it answers 200.
    await page.get_by_role("button", name="Run now").click()
    status = page.locator(".run-status")
    await expect(status).to_have_attribute("data-state", "succeeded", timeout=15_000)
    [delivery] = standin.delivered()
    assert delivery.msg_id
    await expect(status).to_contain_text(f"succeeded \u00b7 msg_id {delivery.msg_id}")
    history = page.locator("table.runs tbody tr")
    await expect(history).to_have_count(1)
    await expect(history.first).to_contain_text("run now")
    await expect(history.first).to_contain_text("sent")
    await expect(history.first).to_contain_text(delivery.msg_id)

    # The webhook: made, copied, working; rotated; revoked.
    await page.get_by_role("button", name="Create webhook URLs").click()
    url_box = page.get_by_label("URL", exact=True)
    await expect(url_box).to_have_value(re.compile(re.escape(service.base_url) + "/hooks/whk_[A-Za-z0-9_-]{43}$"))
    first_url = await url_box.input_value()
    assert first_url.startswith(f"{service.base_url}/hooks/whk_")
    await expect(page.get_by_label("Polling URL")).to_have_value(first_url + "/poll")
    await page.get_by_role("button", name="Copy the URL").click()
    await expect(page.get_by_text("URL copied")).to_be_visible()
    assert await page.evaluate("() => navigator.clipboard.readText()") == first_url
    await browser.screenshot("08-task-after-run-now")
    async with service.session.post(first_url) as hooked:
        assert hooked.status == 200
    await page.get_by_role("button", name="Rotate URLs").click()
    await page.get_by_role("dialog").get_by_role("button", name="Rotate").click()
    await expect(url_box).not_to_have_value(first_url)
    async with service.session.post(first_url) as old:
        assert old.status == 404
    await page.get_by_role("button", name="Revoke URLs").click()
    await page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    await expect(page.get_by_text("No webhook URLs.")).to_be_visible()
    assert (await api.call("GET", f"/v4/schedules/{schedule_id}/webhook")).status == 404

    # Disable: the task says so, and so does the API.
    await page.get_by_role("button", name="Disable").click()
    await expect(page.locator("h1 .badge")).to_have_text("disabled")
    await expect(page.get_by_role("button", name="Enable")).to_be_focused()
    assert (await api.get(schedule_id)).json["enabled"] is False
    await browser.screenshot("09-task-disabled")

    # Delete asks first: Cancel keeps the task, Delete removes it.
    await page.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Delete \u201cnightly report\u201d?")
    await browser.screenshot("10-delete-confirmation", full_page=False)  # the backdrop covers the viewport only
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_have_count(0)
    assert (await api.get(schedule_id)).status == 200
    await page.get_by_role("button", name="Delete").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete task").click()
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="Deleted")).to_contain_text("nightly report")
    await expect(page.get_by_text("No tasks yet")).to_be_visible()
    assert (await api.get(schedule_id)).status == 404
    api.check_against_spec()
