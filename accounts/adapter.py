from allauth.account.adapter import DefaultAccountAdapter

from core.services import email_enqueue


class AccountAdapter(DefaultAccountAdapter):
    """Account emails (verification, login codes, resets) go through the outbox, so a
    slow or failing SMTP server never fails the request and a lost mail is retried."""

    def send_mail(self, template_prefix, email, context):
        msg = self.render_mail(template_prefix, email, context)
        html = next(
            (
                content
                for content, mimetype in getattr(msg, "alternatives", [])
                if mimetype == "text/html"
            ),
            "",
        )
        email_enqueue(
            to=email,
            subject=msg.subject,
            text_body=msg.body,
            html_body=html,
            kind=f"account:{template_prefix.rsplit('/', 1)[-1]}",
        )
