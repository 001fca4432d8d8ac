"""The creator's sequence tools in the Wagtail admin: building a sequence with its advice,
the per-step report, preview, test send, pause/resume, broadcasts and the timeline."""

import pytest
from django.urls import reverse

from accounts.models import User
from core.models import OutboundEmail
from funnels.models import Broadcast, Enrolment, Sequence, SequenceStep
from funnels.sequences import services

from .test_sequences_support import at, brand_install, confirmed, make_sequence, run_due

pytestmark = pytest.mark.django_db


@pytest.fixture
def creator_client(client, landing_page, settings):
    settings.DRIP_WARMUP_PER_HOUR = 0
    brand_install()
    creator = User.objects.create_superuser("creator@example.com", "a-long pass phrase")
    client.force_login(creator)
    return client


def step_form(prefix_count, steps):
    data = {
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "1",
        "steps-MAX_NUM_FORMS": "1000",
    }
    for i, (kind, subject, body) in enumerate(steps):
        data.update(
            {
                f"steps-{i}-kind": kind,
                f"steps-{i}-delay_days": "1",
                f"steps-{i}-delay_hours": "0",
                f"steps-{i}-delay_from": "previous",
                f"steps-{i}-subject": subject,
                f"steps-{i}-preheader": "",
                f"steps-{i}-body": body,
                f"steps-{i}-button_label": "",
                f"steps-{i}-button_url": "",
                f"steps-{i}-skip_if_tags": "",
                f"steps-{i}-skip_if_owns": "",
                f"steps-{i}-ORDER": str(i + 1),
                f"steps-{i}-id": "",
                f"steps-{i}-DELETE": "",
            }
        )
    return data


def sequence_form(**fields):
    return {
        "name": "Launch",
        "description": "",
        "window_start": "06:00",
        "window_end": "22:00",
        "reentry": "once",
        "enrol_tag": "",
        "track_opens": "",
        **fields,
    }


def test_creating_a_sequence_warns_about_offers_back_to_back_and_long_subjects(creator_client):
    data = {
        **sequence_form(),
        **step_form(
            3,
            [
                ("content", "Welcome", "Hi {{ first_name }}"),
                ("offer", "Buy the course now while the launch price lasts, really", "Buy."),
                ("offer", "Last call", "Buy!"),
            ],
        ),
    }

    response = creator_client.post(
        reverse("wagtailsnippets_funnels_sequence:add"), data, follow=True
    )

    assert response.status_code == 200
    sequence = Sequence.objects.get()
    assert sequence.steps.order_by("sort_order").first().subject == "Welcome"
    shown = [str(m) for m in response.context["messages"]]
    assert any("offer right after another offer" in m for m in shown)
    assert any("characters; subjects of 40 or fewer" in m for m in shown)


def test_a_step_with_a_template_error_is_refused_with_the_reason(creator_client):
    data = {**sequence_form(), **step_form(1, [("content", "Hi", "Hello {% if x %}")])}

    response = creator_client.post(reverse("wagtailsnippets_funnels_sequence:add"), data)

    assert response.status_code == 200
    assert not Sequence.objects.exists()
    assert "Unclosed tag" in response.content.decode()


def test_a_window_reaching_into_the_night_is_refused(creator_client):
    data = {
        **sequence_form(window_start="05:00", window_end="23:00"),
        **step_form(1, [("content", "Hi", "Hello")]),
    }

    response = creator_client.post(reverse("wagtailsnippets_funnels_sequence:add"), data)

    assert not Sequence.objects.exists()
    page = response.content.decode()
    assert "never go out before 06:00" in page
    assert "never go out after 22:00" in page


def test_the_edit_form_shows_each_subjects_length(creator_client):
    sequence = make_sequence()

    response = creator_client.get(
        reverse("wagtailsnippets_funnels_sequence:edit", args=[sequence.pk])
    )

    assert (
        "14 characters" in response.content.decode()
    )  # "The one mistake" is 15; "Doors are open" 14


def test_the_report_shows_per_step_figures_and_pause_and_resume_work(creator_client):
    sequence = make_sequence()
    for i in range(3):
        services.enrolment_start(
            sequence=sequence,
            subscriber=confirmed(f"r{i}@lodestone-mail.fi"),
            source="admin",
            now=at("2026-03-02 10:00"),
        )
    run_due(at("2026-03-02 10:00"))
    url = reverse("funnels_sequences:report", args=[sequence.pk])

    page = creator_client.get(url).content.decode()

    assert "Welcome, {{ first_name|default:&#x27;friend&#x27; }}" in page
    assert "<svg" in page and "Step 1: 3 sent" in page
    response = creator_client.post(reverse("funnels_sequences:pause", args=[sequence.pk]))
    assert response.status_code == 302
    assert set(Enrolment.objects.values_list("status", flat=True)) == {"paused"}
    assert "Resume sending" in creator_client.get(url).content.decode()
    creator_client.post(reverse("funnels_sequences:resume", args=[sequence.pk]))
    assert set(Enrolment.objects.values_list("status", flat=True)) == {"active"}


def test_preview_renders_a_step_for_a_chosen_subscriber_and_a_test_goes_to_the_creator(
    creator_client,
):
    sequence = make_sequence()
    aino = confirmed("aino@lodestone-mail.fi", name="Aino Virtanen")
    step = SequenceStep.objects.get(sequence=sequence, sort_order=0)

    page = creator_client.get(
        reverse("funnels_sequences:preview_step", args=[step.pk]), {"subscriber": aino.pk}
    ).content.decode()
    assert "Welcome, Aino" in page
    assert "Kauppakatu 1" in page

    creator_client.post(reverse("funnels_sequences:test_step", args=[step.pk]), {"subscriber": ""})
    test = OutboundEmail.objects.get(kind="sequences:test")
    assert test.to == "creator@example.com"
    assert test.subject.startswith("[Test] Welcome")
    assert test.html_body and test.text_body


def test_a_broadcast_is_sent_from_its_edit_page_and_can_be_cancelled(creator_client):
    confirmed("leila@lodestone-mail.fi").tags.add("launch")
    broadcast = Broadcast.objects.create(name="News", subject="News", body="Hello", tags="launch")

    response = creator_client.post(reverse("funnels_sequences:broadcast_send", args=[broadcast.pk]))

    assert response.status_code == 302
    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.SCHEDULED
    creator_client.post(reverse("funnels_sequences:broadcast_cancel", args=[broadcast.pk]))
    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.CANCELLED
    edit = creator_client.get(reverse("funnels_broadcasts:edit", args=[broadcast.pk]))
    assert edit.status_code == 200


def test_a_subscribers_timeline_lists_enrolment_emails_and_exits_in_order(creator_client):
    sequence = make_sequence()
    leila = confirmed("leila@lodestone-mail.fi")
    services.enrolment_start(
        sequence=sequence, subscriber=leila, source="optin", now=at("2026-03-02 10:00")
    )
    run_due(at("2026-03-02 10:00"))
    services.subscriber_left(subscriber=leila, reason="unsubscribed")

    page = creator_client.get(
        reverse("funnels_sequences:index"), {"email": "LEILA@lodestone-mail.fi"}
    ).content.decode()

    entered = page.index("Entered “Launch sequence”")
    sent = page.index("“Launch sequence”: Welcome, Leila")
    left = page.index("Left “Launch sequence”")
    assert entered < sent < left
    assert "Unsubscribed" in page


def test_a_subscribers_page_shows_their_sequences_and_links_to_their_timeline(creator_client):
    sequence = make_sequence("رحلة الإطلاق")
    leila = confirmed("leila@lodestone-mail.fi")
    services.enrolment_start(
        sequence=sequence, subscriber=leila, source="optin", now=at("2026-03-02 10:00")
    )
    timeline = reverse("funnels_sequences:timeline", args=[leila.pk])

    page = creator_client.get(reverse("subscribers:inspect", args=[leila.pk])).content.decode()

    assert page.count(f'href="{timeline}"') == 2  # the header button and the section's link
    assert "<bdi>رحلة الإطلاق</bdi>" in page
    assert "Welcome, {{ first_name|default:&#x27;friend&#x27; }}" in page  # the next email
    back = creator_client.get(timeline).content.decode()
    assert f'href="{reverse("subscribers:inspect", args=[leila.pk])}"' in back


def test_people_without_subscriber_access_cannot_see_timelines_or_reports(client, landing_page):
    editor = User.objects.create_user("editor@example.com", "a-long pass phrase")
    from django.contrib.auth.models import Permission

    editor.user_permissions.add(Permission.objects.get(codename="access_admin"))
    client.force_login(editor)
    sequence = make_sequence()

    assert client.get(reverse("funnels_sequences:index")).status_code in (302, 403)
    assert client.get(reverse("funnels_sequences:report", args=[sequence.pk])).status_code in (
        302,
        403,
    )
