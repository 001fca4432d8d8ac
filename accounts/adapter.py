from dataclasses import dataclass
from urllib.parse import urlsplit

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import context as allauth_context
from django.conf import settings

from core.services import brand_settings, default_from_email, email_enqueue


@dataclass(frozen=True)
class BrandSite:
    """What allauth's email templates call `current_site`: the creator's brand."""

    name: str
    domain: str


class AccountAdapter(DefaultAccountAdapter):
    """Account emails (verification, sign-in codes, resets) go through the outbox, so a
    slow or failing SMTP server never fails the request and a lost mail is retried."""

    def get_from_email(self) -> str:
        return default_from_email()

    def send_mail(self, template_prefix: str, email: str, context: dict) -> None:
        request = allauth_context.request
        site = BrandSite(
            name=brand_settings().brand_name,
            domain=request.get_host() if request else urlsplit(settings.SITE_URL).netloc,
        )
        msg = self.render_mail(
            template_prefix,
            email,
            {"request": request, "email": email, "current_site": site, **context},
        )
        html = next(
            (
                body
                for body, mimetype in getattr(msg, "alternatives", [])
                if mimetype == "text/html"
            ),
            "",
        )
        email_enqueue(
            to=email,
            subject=msg.subject,
            text_body=msg.body,
            html_body=html,
            from_email=msg.from_email,
            kind=f"account:{template_prefix.rsplit('/', 1)[-1]}",
        )
