"""Public edges of sequences: click and open tracking, and the email provider's webhooks."""

import base64

from anymail.webhooks.postmark import PostmarkInboundWebhookView, PostmarkTrackingWebhookView
from django.db.models import F
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from funnels.models import DripDelivery

from . import tracking

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


@never_cache
def click(request, token: str):
    """Record a click, then go where the email's link pointed. Only destinations we signed
    redirect: a tampered or made-up link gets an error page, never a redirect."""
    try:
        delivery_id, target = tracking.click_target(token)
    except tracking.BadLink:
        return render(
            request,
            "funnels/link_problem.html",
            {
                "message": "This link is not valid. Please use the link exactly as it was in the email."
            },
            status=400,
        )
    now = timezone.now()
    DripDelivery.objects.filter(pk=delivery_id).update(clicks=F("clicks") + 1)
    DripDelivery.objects.filter(pk=delivery_id, clicked_at__isnull=True).update(clicked_at=now)
    return HttpResponseRedirect(target)


@never_cache
def open_pixel(request, token: str):
    try:
        delivery_id = tracking.opened_delivery(token)
    except tracking.BadLink:
        delivery_id = None
    if delivery_id is not None:
        DripDelivery.objects.filter(pk=delivery_id, opened_at__isnull=True).update(
            opened_at=timezone.now()
        )
    return HttpResponse(PIXEL, content_type="image/gif")


class _SecretRequired:
    """Anymail only warns when no webhook secret is set; we refuse instead, before any
    event reaches the database."""

    warn_if_no_basic_auth = False

    @method_decorator(csrf_exempt)
    def dispatch(self, request, *args, **kwargs):
        if not self.basic_auth:
            return HttpResponse("Webhook secret not configured.", status=403)
        return super().dispatch(request, *args, **kwargs)


class PostmarkTrackingWebhook(_SecretRequired, PostmarkTrackingWebhookView):
    pass


class PostmarkInboundWebhook(_SecretRequired, PostmarkInboundWebhookView):
    pass
