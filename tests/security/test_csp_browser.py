"""The Content-Security-Policy in a real browser: the main pages load in Chromium, served by
gunicorn, without a single violation — the landing page (and its opt-in form, posted from
the page as an edge cache would serve it), a paid lesson with the video player, the
checkout success page and the admin dashboard."""

import re
import time

import pytest
from django.core import signing
from django.test import Client
from playwright.sync_api import expect

from funnels.forms import RENDERED_SALT
from funnels.models import SignUp
from tests.security.world import CHECKOUT_SESSION_ID, world_build

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LISTEN = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(
    `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} in ${e.sourceFile}:${e.lineNumber}`
  );
});
"""


@pytest.fixture
def server_world(server_protected_storage, django_server_env, django_user_model):
    """The world, with protected files where the gunicorn process reads them."""
    assert server_protected_storage.location == django_server_env["LODESTONE_PROTECTED_ROOT"]
    return world_build(django_user_model)


@pytest.fixture
def watched(page, browser_context):
    """The page, recording every CSP violation and every console message about one."""
    # Loopback only: nothing on these pages may reach out anyway.
    browser_context.route(
        re.compile(r"^(?!https?://(127\.0\.0\.1|localhost)[:/]).*"), lambda route: route.abort()
    )
    page.add_init_script(LISTEN)
    console: list[str] = []
    page.on(
        "console",
        lambda message: (
            console.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.console_csp = console
    return page


def violations(page) -> list[str]:
    return page.evaluate("() => window.__cspViolations") + page.console_csp


def sign_in(browser_context, web_server, user):
    client = Client()
    client.force_login(user)
    browser_context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": web_server.url}]
    )


def test_landing_page_and_its_opt_in_run_without_csp_violations(web_server, server_world, watched):
    # given an anonymous visitor on the landing page (edge-cacheable: no CSRF token in it)
    response = watched.goto(web_server.url + server_world.landing.url)
    assert "public" in response.headers["cache-control"]
    assert "content-security-policy" in response.headers

    # when they sign up with the form, sent by optin.js from the page
    # (the render time as a cached copy made a minute earlier would carry it)
    watched.evaluate(
        "(value) => document.querySelector('input[name=rendered_at]').value = value",
        signing.dumps(int(time.time()) - 60, salt=RENDERED_SALT),
    )
    watched.get_by_label("Email address").fill("csp.reader@lodestone-demo.fi")
    watched.get_by_label("Send me the checklist.").check()
    watched.get_by_role("button", name="Send it").click()

    # then the sign-up is taken, and nothing was blocked
    expect(watched.locator("[data-optin-success]")).to_contain_text("check your inbox")
    assert SignUp.objects.filter(email="csp.reader@lodestone-demo.fi").exists()
    assert violations(watched) == []


def test_paid_lesson_with_the_video_player_runs_without_csp_violations(
    web_server, server_world, watched, browser_context
):
    # given the buyer, signed in
    sign_in(browser_context, web_server, server_world.buyer)

    # when they open the lesson with its video
    watched.goto(web_server.url + server_world.tree.paid_lesson.url)

    # then hls.js attached the stream (a blob: Media Source) and asked for the playlists
    player = watched.locator("[data-video-player]")
    expect(player).to_have_attribute("data-engine", "hls.js")
    watched.wait_for_function(
        "() => performance.getEntriesByType('resource').some((r) => r.name.includes('/index.m3u8'))"
    )
    assert watched.evaluate("() => document.querySelector('video').src").startswith("blob:")
    assert violations(watched) == []


def test_checkout_success_page_runs_without_csp_violations(
    web_server, server_world, watched, browser_context
):
    sign_in(browser_context, web_server, server_world.buyer)

    watched.goto(f"{web_server.url}/pay/checkout/success/?session_id={CHECKOUT_SESSION_ID}")

    expect(watched.get_by_role("heading", level=1)).to_have_text("Thank you — you are in!")
    assert violations(watched) == []


def test_admin_dashboard_runs_without_csp_violations(
    web_server, server_world, watched, browser_context
):
    sign_in(browser_context, web_server, server_world.staff)

    watched.goto(web_server.url + "/admin/")
    expect(watched.locator("#main")).to_be_visible()
    watched.wait_for_load_state("networkidle")

    assert violations(watched) == []


def test_the_policy_blocks_an_injected_inline_script_and_the_watch_sees_it(
    web_server, server_world, watched
):
    # given the landing page
    watched.goto(web_server.url + server_world.landing.url)

    # when something injects an inline script (as stored XSS would)
    watched.evaluate(
        """() => { const s = document.createElement("script");
                   s.textContent = "window.__injected = true;";
                   document.body.appendChild(s); }"""
    )

    # then it did not run, and the violation was reported
    watched.wait_for_function("() => window.__cspViolations.length > 0")
    assert watched.evaluate("() => window.__injected") is None
    assert any(v.startswith("script-src-elem blocked inline") for v in violations(watched))
