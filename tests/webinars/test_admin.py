"""The editor: a webinar is created and edited in the Wagtail admin like any page, gets
its product, and publishing it opens its sessions."""

import datetime

import pytest

from accounts.models import User
from webinars.models import Occasion, WebinarPage

from .conftest import ROOM


@pytest.fixture
def creator_client(db, client):
    creator = User.objects.create_user(
        "maya@example.com", "a long pass phrase 1", is_staff=True, is_superuser=True
    )
    client.force_login(creator)
    return client


def inline(prefix: str, rows: list[dict]) -> dict:
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for number, row in enumerate(rows):
        for key, value in {**row, "ORDER": str(number + 1), "DELETE": ""}.items():
            data[f"{prefix}-{number}-{key}"] = value
    return data


def test_a_creator_publishes_a_webinar_from_the_admin(creator_client, home):
    url = f"/admin/pages/add/webinars/webinarpage/{home.pk}/"
    assert creator_client.get(url).status_code == 200
    start = datetime.date.today() + datetime.timedelta(days=5)
    data = {
        "title": "Pricing Q&A",
        "slug": "pricing-qa",
        "description": '{"blocks": [], "entityMap": {}}',
        "host_name": "Maya",
        "host_bio": "",
        "join_url": ROOM,
        "join_early_minutes": "10",
        "consent_text": "Send me the webinar details.",
        "evergreen_duration_minutes": "60",
        "evergreen_capacity": "0",
        "evergreen_days_ahead": "7",
        "replay_days": "7",
        "action-publish": "publish",
        **inline(
            "sessions",
            [
                {
                    "start_date": start.isoformat(),
                    "start_time": "18:00",
                    "time_zone": "Asia/Kathmandu",
                    "duration_minutes": "90",
                    "capacity": "25",
                    "join_url": "",
                }
            ],
        ),
        **inline("evergreen_rules", []),
    }

    response = creator_client.post(url, data)

    assert response.status_code == 302, (
        response.context["form"].errors if response.context else response
    )
    page = WebinarPage.objects.get(slug="pricing-qa")
    assert page.live
    assert page.product is not None and page.product.kind == "webinar"
    [occasion] = Occasion.objects.filter(page=page)
    assert occasion.starts_at == datetime.datetime.combine(
        start, datetime.time(12, 15), tzinfo=datetime.UTC
    )
    assert (occasion.capacity, occasion.duration_minutes) == (25, 90)
    # the editor shows the creator's numbers button
    edit = creator_client.get(f"/admin/pages/{page.pk}/edit/")
    assert edit.status_code == 200
    assert f"/admin/webinars/{page.pk}/registrations/" in edit.content.decode()


def test_a_webinar_copied_in_the_admin_gets_a_product_of_its_own(creator_client, home):
    from .conftest import make_webinar

    original = make_webinar(home)

    response = creator_client.post(
        f"/admin/pages/{original.pk}/copy/",
        {
            "new_title": "Pricing Q&A, second run",
            "new_slug": "pricing-qa-2",
            "new_parent_page": str(home.pk),
            "copy_subpages": "",
            "publish_copies": "",
            "alias": "",
        },
    )

    assert response.status_code == 302, response.content[:2000]
    copy = WebinarPage.objects.get(slug="pricing-qa-2")
    assert copy.product_id is not None
    assert copy.product_id != original.product_id
