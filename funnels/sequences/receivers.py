"""Signal connections: they pass the event to a service and hold no rules themselves."""

import logging

from django.db.models.signals import m2m_changed

logger = logging.getLogger(__name__)


def on_purchase_completed(sender, order, products, **kwargs) -> None:
    from .services import purchase_recorded

    purchase_recorded(order=order, products=products)


def on_subscriber_tags_changed(sender, instance, action, pk_set, **kwargs) -> None:
    from funnels.models import Subscriber

    if action != "post_add" or not pk_set or not isinstance(instance, Subscriber):
        return
    if instance.status != Subscriber.Status.CONFIRMED:
        return  # pending subscribers are enrolled when they confirm
    from taggit.models import Tag

    from .services import enrol_on_tags

    enrol_on_tags(
        subscriber=instance,
        tag_names=list(Tag.objects.filter(pk__in=pk_set).values_list("name", flat=True)),
    )


def on_esp_tracking(sender, event, esp_name, **kwargs) -> None:
    from .esp import tracking_event_record

    tracking_event_record(event=event, esp_name=esp_name)


def on_esp_inbound(sender, event, esp_name, **kwargs) -> None:
    from .esp import inbound_unsubscribe

    inbound_unsubscribe(event=event, esp_name=esp_name)


def connect() -> None:
    from anymail.signals import inbound, tracking

    from payments.signals import purchase_completed

    purchase_completed.connect(
        on_purchase_completed, dispatch_uid="funnels.sequences.purchase_completed"
    )
    m2m_changed.connect(
        on_subscriber_tags_changed,
        sender="funnels.SubscriberTag",
        dispatch_uid="funnels.sequences.subscriber_tags",
    )
    tracking.connect(on_esp_tracking, dispatch_uid="funnels.sequences.esp_tracking")
    inbound.connect(on_esp_inbound, dispatch_uid="funnels.sequences.esp_inbound")
