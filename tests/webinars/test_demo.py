import io

from webinars import demo
from webinars.models import Occasion, WebinarPage


def test_the_demo_webinar_has_one_free_upcoming_session_and_loads_once(home, client):
    facts = demo.load(stdout=io.StringIO())
    demo.load(stdout=io.StringIO())

    page = WebinarPage.objects.get()
    assert not page.is_paid
    [occasion] = Occasion.objects.filter(page=page)
    assert occasion.time_zone == "Europe/Helsinki"
    assert occasion.starts_at.astimezone(occasion.zone).hour == 18
    assert page.product is not None
    response = client.get(facts["webinar_url"])
    assert response.status_code == 200
    assert "100 seats left" in response.content.decode()
