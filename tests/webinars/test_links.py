"""Personal join links (countdown, room, refusals), the gated replay, evergreen slots,
tickets, and the creator's view."""

import datetime
import zoneinfo
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core import signing
from django.utils import timezone

from accounts.models import User
from media.access import can_view_video
from media.models import Video
from payments import services as payment_services
from payments.models import Offer, Order, Price
from webinars import links, selectors, services
from webinars.exceptions import InvalidSlot, TicketRequired
from webinars.models import (
    EvergreenRule,
    JoinOpen,
    Occasion,
    Registration,
    ReplayView,
    WebinarSession,
)

from .conftest import ROOM, at, make_webinar, occasions, outbox, register, session_at


def path_of(registration, view="webinars:join") -> str:
    return links.registrant_url(view, registration, absolute=False)


def move_to(occasion: Occasion, starts_at) -> None:
    Occasion.objects.filter(pk=occasion.pk).update(starts_at=starts_at)


@pytest.fixture
def webinar(home):
    start = timezone.now() + timedelta(days=2)
    return make_webinar(
        home,
        sessions=[session_at(start, capacity=5), session_at(start + timedelta(days=1))],
    )


@pytest.fixture
def leila(webinar):
    return register(webinar, occasions(webinar)[0], "leila@example.com").registration


def test_before_the_doors_open_the_link_shows_a_countdown_in_the_registrants_zone(client, leila):
    response = client.get(path_of(leila))
    assert response.status_code == 200
    html = response.content.decode()
    assert "The session starts" in html
    starts = leila.occasion.starts_at.astimezone(zoneinfo.ZoneInfo("Asia/Kathmandu"))
    assert f"{starts:%H:%M} (Asia/Kathmandu)" in html  # the fallback text, server-rendered
    assert 'data-zone="Asia/Kathmandu"' in html
    assert "Starts in 1\xa0day" in html or "Starts in 2\xa0days" in html
    assert ROOM not in html
    assert (
        response["Cache-Control"].startswith("private") or "no-store" in response["Cache-Control"]
    )
    assert JoinOpen.objects.get().outcome == JoinOpen.Outcome.EARLY


def test_during_the_session_the_link_redirects_to_the_room_and_counts_attendance(client, leila):
    move_to(leila.occasion, timezone.now() - timedelta(minutes=5))
    response = client.get(path_of(leila))
    assert response.status_code == 302
    assert response["Location"] == ROOM
    assert JoinOpen.objects.get().outcome == JoinOpen.Outcome.ADMITTED


def test_the_doors_open_early_by_the_configured_minutes(client, leila):
    move_to(leila.occasion, timezone.now() + timedelta(minutes=9))
    assert client.get(path_of(leila)).status_code == 302  # doors open 10 minutes before
    move_to(leila.occasion, timezone.now() + timedelta(minutes=11))
    assert client.get(path_of(leila)).status_code == 200


def test_a_session_room_overrides_the_webinars(client, home):
    start = timezone.now() - timedelta(minutes=1)
    webinar = make_webinar(
        home, sessions=[session_at(start, join_url="https://live.example.net/session-2")]
    )
    registration = register(webinar, occasions(webinar)[0], "a@example.com").registration
    assert client.get(path_of(registration))["Location"] == "https://live.example.net/session-2"


def test_after_the_session_the_link_says_so(client, leila):
    move_to(leila.occasion, timezone.now() - timedelta(hours=3))
    response = client.get(path_of(leila))
    assert response.status_code == 410
    assert "This session has ended" in response.content.decode()


def test_a_forged_link_is_refused(client, leila):
    token = links.registrant_token(leila)
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    response = client.get(f"/webinar/join/{tampered}/")
    assert response.status_code == 404
    assert "This link does not work" in response.content.decode()
    # signed with our salt but naming a key that is not the registration's
    forged = signing.dumps(
        {"r": leila.pk, "o": leila.occasion_id, "k": "guessed"},
        salt=links.LINK_SALT,
        compress=True,
    )
    assert client.get(f"/webinar/join/{forged}/").status_code == 404
    assert not JoinOpen.objects.exists()


def test_a_link_opened_by_another_signed_in_user_is_refused(client, webinar, leila):
    move_to(leila.occasion, timezone.now() - timedelta(minutes=1))
    stranger = User.objects.create_user("omar@example.com", "a long pass phrase 1")
    client.force_login(stranger)
    response = client.get(path_of(leila))
    assert response.status_code == 403
    assert "belongs to another registrant" in response.content.decode()
    assert not JoinOpen.objects.exists()


def test_the_registrant_signed_in_is_let_in(client, leila):
    move_to(leila.occasion, timezone.now() - timedelta(minutes=1))
    client.force_login(User.objects.create_user("Leila@example.com", "a long pass phrase 1"))
    assert client.get(path_of(leila))["Location"] == ROOM


def test_a_second_registrants_link_does_not_admit_the_first(client, webinar, leila):
    omar = register(webinar, leila.occasion, "omar@example.com").registration
    move_to(leila.occasion, timezone.now() - timedelta(minutes=1))
    client.force_login(User.objects.create_user("leila@example.com", "a long pass phrase 1"))
    assert client.get(path_of(omar)).status_code == 403
    assert client.get(path_of(leila)).status_code == 302


def test_a_link_to_a_session_one_has_left_stops_working(client, webinar, leila):
    old_path = path_of(leila)
    second = occasions(webinar)[1]
    moved = register(webinar, second, "leila@example.com").registration
    response = client.get(old_path)
    assert response.status_code in (404, 410)
    assert client.get(path_of(moved)).status_code == 200


def test_a_cancelled_registration_or_session_does_not_open_the_room(client, webinar, leila):
    services.registration_cancel(registration=leila)
    leila.refresh_from_db()
    move_to(leila.occasion, timezone.now() - timedelta(minutes=1))
    response = client.get(path_of(leila))
    assert response.status_code == 410
    assert "You gave back your seat" in response.content.decode()


def test_the_cancel_link_asks_then_gives_the_seat_back(client, leila):
    assert "Cancel my seat" in client.get(path_of(leila, "webinars:cancel")).content.decode()
    assert client.post(path_of(leila, "webinars:cancel")).status_code == 200
    leila.refresh_from_db()
    assert leila.status == Registration.Status.CANCELLED


# --- Replay ------------------------------------------------------------------------------


@pytest.fixture
def recording(webinar):
    video = Video.objects.create(
        title="Recording", source="videos/sources/x.mp4", status=Video.Status.READY
    )
    webinar.replay_video = video
    webinar.replay_days = 7
    webinar.save_revision().publish()
    return video


def test_the_replay_plays_for_the_registrant_for_n_days_then_is_refused_clearly(
    client, webinar, leila, recording
):
    user = User.objects.create_user("leila@example.com", "a long pass phrase 1")
    client.force_login(user)
    # before the session: not yet
    assert client.get(path_of(leila, "webinars:replay")).status_code == 403
    assert not can_view_video(user, recording)

    # after the session, within the window: the player, and media lets the video play
    move_to(leila.occasion, timezone.now() - timedelta(days=2))
    response = client.get(path_of(leila, "webinars:replay"))
    assert response.status_code == 200
    assert "data-video-player" in response.content.decode()
    assert can_view_video(user, recording)
    assert ReplayView.objects.filter(registration=leila).count() == 1

    # past the window: refused with the reason
    move_to(leila.occasion, timezone.now() - timedelta(days=8))
    response = client.get(path_of(leila, "webinars:replay"))
    assert response.status_code == 410
    assert "available for 7 days after your session" in response.content.decode()
    assert not can_view_video(user, recording)


def test_a_signed_out_registrant_is_asked_to_sign_in_with_a_code(client, leila, recording):
    move_to(leila.occasion, timezone.now() - timedelta(hours=3))
    response = client.get(path_of(leila, "webinars:replay"))
    assert response.status_code == 401
    assert "Email me a sign-in code" in response.content.decode()
    # the account they sign in to exists now, and is theirs
    assert Registration.objects.get(pk=leila.pk).user.email == "leila@example.com"


def test_other_users_cannot_play_the_replay(webinar, leila, recording):
    move_to(leila.occasion, timezone.now() - timedelta(hours=3))
    stranger = User.objects.create_user("omar@example.com", "a long pass phrase 1")
    assert not can_view_video(stranger, recording)


# --- Tickets ------------------------------------------------------------------------------


def ticket_offer_for(webinar) -> Offer:
    offer = Offer.objects.create(slug="pricing-qa-ticket", title="Ticket", is_published=True)
    offer.products.add(webinar.product)
    Price.objects.create(offer=offer, amount=2900, currency="eur")
    webinar.ticket_offer = offer
    webinar.save_revision().publish()
    return offer


def paid_order(email: str, offer: Offer) -> Order:
    buyer, _created = payment_services.buyer_get_or_create(email=email)
    order = Order.objects.create(
        buyer=buyer,
        email=email,
        offer=offer,
        stripe_checkout_session_id=f"cs_test_{email}",
        status=Order.Status.PAID,
        paid_at=timezone.now(),
    )
    payment_services.entitlement_grant(user=buyer, product=offer.products.get(), order=order)
    return order


def test_a_ticket_purchase_seats_the_buyer_and_a_refund_gives_it_back(
    client, webinar, recording, django_capture_on_commit_callbacks
):
    offer = ticket_offer_for(webinar)
    with pytest.raises(TicketRequired):
        register(webinar, occasions(webinar)[0], "free@example.com")

    order = paid_order("buyer@example.com", offer)
    with django_capture_on_commit_callbacks(execute=True):
        from payments.signals import purchase_completed

        purchase_completed.send(sender=Order, order=order, products=[webinar.product])

    registration = Registration.objects.get(email="buyer@example.com")
    assert (registration.source, registration.status) == ("ticket", "registered")
    assert registration.occasion == occasions(webinar)[0]
    assert outbox("buyer@example.com", "webinars:confirmation")

    # the ticket's link asks the buyer to sign in; signed in, it admits them
    move_to(registration.occasion, timezone.now() - timedelta(minutes=1))
    response = client.get(path_of(registration))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(order.buyer)
    assert client.get(path_of(registration))["Location"] == ROOM
    # and ticket holders keep the replay for good
    move_to(registration.occasion, timezone.now() - timedelta(days=400))
    assert can_view_video(order.buyer, recording)

    # when the payment is refunded
    payment_services.entitlement_revoke(user=order.buyer, product=webinar.product, reason="refund")
    with django_capture_on_commit_callbacks(execute=True):
        from payments.signals import access_revoked

        access_revoked.send(sender=Order, order=order, products=[webinar.product], reason="refund")
    assert Registration.objects.get(pk=registration.pk).status == "cancelled"
    assert not can_view_video(order.buyer, recording)


def test_a_ticket_holder_picks_another_session_on_the_page(client, webinar):
    offer = ticket_offer_for(webinar)
    order = paid_order("buyer@example.com", offer)
    services.tickets_register(order=order, products=[webinar.product])
    second = occasions(webinar)[1]
    client.force_login(order.buyer)
    response = client.post(
        f"/webinar/register/{webinar.pk}/",
        {"occasion": str(second.pk), "time_zone": "Europe/Helsinki"},
        HTTP_ORIGIN="http://testserver",
    )
    assert response.status_code == 303
    assert Registration.objects.get(email="buyer@example.com").occasion == second


# --- Evergreen ----------------------------------------------------------------------------


def evergreen(home, rules, **fields):
    return make_webinar(
        home,
        slug=fields.pop("slug", "always-on"),
        is_evergreen=True,
        evergreen_duration_minutes=45,
        evergreen_capacity=3,
        rules=rules,
        **fields,
    )


def test_every_day_at_19_in_the_viewers_zone_follows_each_viewer_and_the_dst_change(home):
    webinar = evergreen(home, [EvergreenRule(at=datetime.time(19, 0))])
    now = at("2027-03-26 08:00")  # a Friday; Helsinki changes clocks on Sunday the 28th
    helsinki = selectors.evergreen_slots(webinar, viewer_time_zone="Europe/Helsinki", now=now)
    assert helsinki[:4] == [
        at("2027-03-26 17:00"),
        at("2027-03-27 17:00"),
        at("2027-03-28 16:00"),  # 19:00 summer time
        at("2027-03-29 16:00"),
    ]
    kathmandu = selectors.evergreen_slots(webinar, viewer_time_zone="Asia/Kathmandu", now=now)
    assert kathmandu[0] == at("2027-03-26 13:15")
    assert len(helsinki) == 7


def test_tuesdays_and_thursdays_at_noon_utc_are_the_same_instants_for_everyone(home):
    rule = EvergreenRule(at=datetime.time(12, 0), time_zone="UTC")
    for day in ("monday", "wednesday", "friday", "saturday", "sunday"):
        setattr(rule, day, False)
    webinar = evergreen(home, [rule])
    now = at("2026-12-01 13:00")  # a Tuesday, after noon
    for zone in ("Asia/Kathmandu", "America/New_York"):
        assert selectors.evergreen_slots(webinar, viewer_time_zone=zone, now=now) == [
            at("2026-12-03 12:00"),
            at("2026-12-08 12:00"),
        ]


def test_registering_for_a_slot_makes_its_occasion_and_the_link_plays_it_at_slot_time(client, home):
    webinar = evergreen(home, [EvergreenRule(at=datetime.time(19, 0))])
    video = Video.objects.create(title="Show", source="x.mp4", status=Video.Status.READY)
    webinar.replay_video = video
    webinar.save_revision().publish()
    slot = selectors.evergreen_slots(webinar, viewer_time_zone="Asia/Kathmandu")[0]

    with pytest.raises(InvalidSlot):
        services.registration_free_submit(
            page=webinar,
            email="x@example.com",
            name="",
            consent=True,
            time_zone="Asia/Kathmandu",
            visitor=None,
            slot=(slot + timedelta(minutes=7)).isoformat(),
        )
    registration = register(
        webinar, None, "sita@example.com", time_zone="Asia/Kathmandu", slot=slot.isoformat()
    ).registration
    occasion = registration.occasion
    assert (occasion.kind, occasion.starts_at, occasion.capacity) == ("evergreen", slot, 3)
    assert occasion.time_zone == "Asia/Kathmandu"
    assert occasion.ends_at - occasion.starts_at == timedelta(minutes=45)

    # before the slot: a countdown; at slot time, the link leads to the player
    assert client.get(path_of(registration)).status_code == 200
    Occasion.objects.filter(pk=occasion.pk).update(starts_at=timezone.now() - timedelta(minutes=1))
    response = client.get(path_of(registration))
    assert response.status_code == 302
    assert urlsplit(response["Location"]).path.startswith("/webinar/replay/")
    user = User.objects.create_user("sita@example.com", "a long pass phrase 1")
    assert can_view_video(user, video)


def test_the_evergreen_page_offers_slots_in_the_zone_the_browser_reports(client, home):
    evergreen(home, [EvergreenRule(at=datetime.time(19, 0))])
    html = client.get("/always-on/?tz=Asia/Kathmandu").content.decode()
    assert html.count('name="slot"') == 7
    assert '19:00 <span class="muted">(Asia/Kathmandu)' in html


# --- The creator's view -------------------------------------------------------------------


def test_the_creator_sees_registrations_attendance_replays_and_conversions(
    client, webinar, leila, recording
):
    follow_up = Offer.objects.create(slug="course", title="The course", is_published=True)
    webinar.follow_up_offer = follow_up
    webinar.save_revision().publish()
    omar = register(webinar, leila.occasion, "omar@example.com").registration
    services.join_open_record(registration=leila, outcome="admitted", visitor=_V())
    services.replay_view_record(page=webinar, registration=omar, user=None)
    Order.objects.create(
        email="omar@example.com",
        offer=follow_up,
        stripe_checkout_session_id="cs_test_follow",
        status=Order.Status.PAID,
        paid_at=timezone.now(),
    )
    creator = User.objects.create_user(
        "maya@example.com", "a long pass phrase 1", is_staff=True, is_superuser=True
    )
    client.force_login(creator)

    response = client.get(f"/admin/webinars/{webinar.pk}/registrations/")

    assert response.status_code == 200
    stats = response.context["stats"]
    assert (stats.registered, stats.attended, stats.replay_viewers, stats.converted) == (
        2,
        1,
        1,
        1,
    )
    html = response.content.decode()
    assert "<svg" in html and "Bought the follow-up: 1" in html
    assert "omar@example.com" in html
    # a signed-in non-editor is turned away
    client.force_login(User.objects.create_user("x@example.com", "a long pass phrase 1"))
    assert client.get(f"/admin/webinars/{webinar.pk}/registrations/").status_code in (302, 403)


class _V:
    ip_address = "198.51.100.4"
    user_agent = "test"


def test_sessions_in_the_editor_keep_their_uid_between_publishes(webinar):
    uids = set(WebinarSession.objects.filter(page=webinar).values_list("uid", flat=True))
    webinar.save_revision().publish()
    assert set(WebinarSession.objects.filter(page=webinar).values_list("uid", flat=True)) == uids
    assert {o.uid for o in occasions(webinar)} == uids
