"""The authorisation matrix: every route of the URL configuration × every kind of visitor,
against the expected answers in authz_table.py. A route without an entry fails the suite."""

import re
from http.cookies import SimpleCookie

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from payments import services as payment_services
from tests.security.authz_table import (
    ADMIN_PREFIX,
    DENY,
    LOGIN,
    METHOD,
    OK,
    REDIRECT,
    ROUTES,
)
from tests.security.conftest import client_for
from tests.security.world import ROLES, path_of

LOGIN_PATHS = ("/accounts/login/", "/_util/login/")
SITE_ORIGIN = "http://testserver"


def url_routes(patterns=None, prefix: str = "", namespace: str | None = None):
    """(route, name) of every URL pattern, includes followed, namespaces joined."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            inner = namespace
            if pattern.namespace:
                inner = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
            yield from url_routes(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            name = pattern.name and (f"{namespace}:{pattern.name}" if namespace else pattern.name)
            yield prefix + str(pattern.pattern), name or prefix + str(pattern.pattern)


def public_routes() -> dict[str, str]:
    return {name: route for route, name in url_routes() if not route.startswith(ADMIN_PREFIX)}


def outcome(response) -> str:
    status = response.status_code
    if 300 <= status < 400:
        location = response.get("Location", "")
        path = re.sub(r"^https?://[^/]+", "", location)
        return LOGIN if path.startswith(LOGIN_PATHS) else REDIRECT
    if 200 <= status < 300:
        return OK
    if status == 405:
        return METHOD
    if status in (400, 401, 403, 404, 410):
        return DENY
    return f"HTTP {status}"


def request(client, case, url):
    if case.method == "POST":
        return client.post(url, case.data, HTTP_ORIGIN=SITE_ORIGIN)
    return client.get(url)


def test_every_route_has_an_entry_in_the_authorisation_table():
    missing = sorted(set(public_routes()) - set(ROUTES))

    assert not missing, (
        "These routes have no entry in tests/security/authz_table.py ROUTES. Add one per "
        "route: how to build its URL and what anonymous, subscriber, other_buyer, buyer "
        "and staff get:\n  " + "\n  ".join(f"{n}  ({public_routes()[n]})" for n in missing)
    )


def test_the_authorisation_table_names_no_route_that_is_gone():
    stale = sorted(set(ROUTES) - set(public_routes()))

    assert not stale, f"Entries for routes that no longer exist: {stale}"


def test_every_route_answers_every_role_as_the_table_says(world, stripe_configured):
    # given every route's cases, for every role, and the buyer a Stripe customer
    customer = stripe_configured.client().v1.customers.create(params={"email": world.buyer.email})
    world.links["billing"] = path_of(payment_services.billing_portal_link(customer_id=customer.id))
    mismatches = []
    # one sign-in per role; each request starts from that session's cookies alone
    clients = {role: client_for(world, role) for role in ROLES}
    signed_in = {
        role: {key: morsel.value for key, morsel in clients[role].cookies.items()} for role in ROLES
    }
    for name, cases in ROUTES.items():
        for case in cases:
            for role in ROLES:
                client = clients[role]
                client.cookies = SimpleCookie(signed_in[role])
                url = case.url(world, role)

                # when
                response = request(client, case, url)

                # then
                got = outcome(response)
                if got != case.expect[role]:
                    mismatches.append(
                        f"{name} [{case.label or case.method}] {role}: expected "
                        f"{case.expect[role]}, got {got} ({response.status_code} "
                        f"{response.get('Location', '')}) for {case.method} {url}"
                    )

    assert not mismatches, "\n".join(mismatches)


# --- The admin, as one family ---------------------------------------------------------------


def admin_index_paths() -> list[str]:
    """Every admin list page that takes no argument: the admin's front doors."""
    paths = []
    for route, name in url_routes():
        if not route.startswith(ADMIN_PREFIX) or "<" in route or "(" in route:
            continue
        if name == "wagtailadmin_home" or name.endswith(("index", ":list", "_index")):
            paths.append(reverse(name) if ":" in name or "_" in name else "/" + route)
    return sorted(set(paths))


@pytest.fixture
def admin_paths():
    paths = admin_index_paths()
    assert len(paths) >= 8, paths  # the dashboard, pages, users, snippets, our viewsets…
    return paths


@pytest.mark.parametrize("role", ["anonymous", "other_buyer", "buyer"])
def test_admin_routes_send_everyone_but_staff_to_sign_in(world, admin_paths, role):
    client = client_for(world, role)

    answers = {path: outcome(client.get(path)) for path in admin_paths}

    assert {p: a for p, a in answers.items() if a != LOGIN} == {}


def test_admin_routes_open_for_staff(world, admin_paths):
    client = client_for(world, "staff")

    answers = {path: client.get(path) for path in admin_paths}

    # 200, or on to another admin page (the snippets index opens the only snippet kind)
    refused = {
        path: (r.status_code, r.get("Location"))
        for path, r in answers.items()
        if not (r.status_code == 200 or r.get("Location", "").startswith("/admin/"))
    }
    assert refused == {}


def test_admin_post_routes_refuse_non_staff(world):
    # A state-changing admin action by a signed-in non-creator goes nowhere.
    client = client_for(world, "buyer")

    response = client.post(
        reverse("wagtailadmin_pages:delete", args=[world.landing.pk]), HTTP_ORIGIN=SITE_ORIGIN
    )

    assert outcome(response) in (LOGIN, DENY)
    assert type(world.landing).objects.filter(pk=world.landing.pk).exists()


__all__ = ["DENY", "LOGIN", "OK", "REDIRECT"]
