import re

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth.models import Permission
from django.core import mail
from django.urls import reverse

from accounts.models import User
from core.models import OutboundEmail
from core.tasks import send_outbound_email

pytestmark = pytest.mark.django_db


def _deliver_queued_emails() -> None:
    # The outbox task, run in-process; tests of the live worker are in test_harness.py.
    for pk in OutboundEmail.objects.filter(status="queued").values_list("pk", flat=True):
        send_outbound_email.apply(args=[pk])


def test_signup_needs_no_username_and_sends_a_verification_email(
    client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("account_signup"),
            {
                "email": "Leila@Example.COM",
                "password1": "a-long pass phrase",
                "password2": "a-long pass phrase",
            },
        )

    assert response.status_code == 302
    user = User.objects.get()
    assert user.email == "leila@example.com"
    assert len(callbacks) == 1, "the verification mail is queued only once the signup commits"
    _deliver_queued_emails()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["leila@example.com"]
    assert re.search(r"/accounts/confirm-email/\S+", mail.outbox[0].body)


def test_unverified_user_cannot_log_in_with_password(client):
    user = User.objects.create_user("new@example.com", "a-long pass phrase")
    EmailAddress.objects.create(user=user, email=user.email, verified=False, primary=True)

    response = client.post(
        reverse("account_login"), {"login": "new@example.com", "password": "a-long pass phrase"}
    )

    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    assert "_auth_user_id" not in client.session


def test_emails_are_unique_regardless_of_case(client):
    User.objects.create_user("sam@example.com", "a-long pass phrase")

    response = client.post(
        reverse("account_signup"),
        {
            "email": "SAM@example.com",
            "password1": "another pass phrase",
            "password2": "another pass phrase",
        },
    )

    assert User.objects.filter(email__iexact="sam@example.com").count() == 1
    # allauth does not reveal that the address exists (enumeration prevention).
    assert response.status_code in (200, 302)


def test_login_by_emailed_code(client):
    user = User.objects.create_user("coder@example.com", "a-long pass phrase")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)

    response = client.post(reverse("account_request_login_code"), {"email": "coder@example.com"})
    assert response.status_code == 302
    _deliver_queued_emails()
    code = re.search(r"^([A-Z0-9]{4}-[A-Z0-9]{4})$", mail.outbox[-1].body, re.M).group(1)

    response = client.post(reverse("account_confirm_login_code"), {"code": code})

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


def test_account_page_lists_the_users_addresses(client):
    user = User.objects.create_user("page@example.com", "a-long pass phrase")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    client.force_login(user)

    response = client.get(reverse("account_overview"))

    assert response.status_code == 200
    assert "page@example.com" in response.content.decode()


def test_creators_are_staff_and_reach_the_wagtail_admin(client):
    creator = User.objects.create_user("maker@example.com", "a-long pass phrase", is_staff=True)
    creator.user_permissions.add(Permission.objects.get(codename="access_admin"))
    client.force_login(creator)

    assert client.get("/admin/").status_code == 200
    client.force_login(User.objects.create_user("buyer@example.com", "a-long pass phrase"))
    assert client.get("/admin/").status_code == 302
