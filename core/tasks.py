import smtplib

from celery import shared_task

from . import services


def is_transient_email_error(exc: BaseException) -> bool:
    """Network trouble and SMTP 4xx replies are worth another try; 5xx are final."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _msg in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, smtplib.SMTPServerDisconnected | OSError)


# 30 tries with a backoff capped at an hour: an SMTP outage of about a day loses nothing.
@shared_task(bind=True, max_retries=30, acks_late=True)
def send_outbound_email(self, email_id: int) -> str:
    message = services.email_claim(email_id=email_id)
    if message is None:
        remaining = services.email_lease_remaining(email_id=email_id)
        if remaining is None:
            return "already handled"
        # Another worker holds it: still sending, or killed mid-send (acks_late then hands
        # this message on at once). Come back when its lease runs out; the claim decides.
        raise self.retry(countdown=remaining + 1)
    try:
        services.email_deliver(message=message)
    except Exception as exc:
        final = not is_transient_email_error(exc) or self.request.retries >= self.max_retries
        services.email_record_failure(email_id=email_id, error=repr(exc), final=final)
        if final:
            return "failed"
        raise self.retry(exc=exc, countdown=min(30 * 2**self.request.retries, 3600)) from exc
    return "sent"


@shared_task
def requeue_stale_emails() -> int:
    return services.email_requeue_stale()
