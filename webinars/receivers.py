"""Signal receivers, connected in WebinarsConfig.ready(). Each hands over to a service."""

import logging

from . import services
from .models import WebinarPage

logger = logging.getLogger(__name__)


def webinar_published(sender, instance, **kwargs):
    """Wagtail's page_published: the sessions as published become the occasions people
    register for (a moved session reschedules, a removed one is cancelled)."""
    if isinstance(instance, WebinarPage):
        services.webinar_sessions_sync(page=instance)


def ticket_bought(sender, order, products, **kwargs):
    """payments' purchase_completed (after commit): a ticket is a seat."""
    services.tickets_register(order=order, products=products)


def ticket_revoked(sender, order, products, **kwargs):
    services.tickets_revoke(order=order, products=products)
