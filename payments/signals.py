"""Hooks for other apps (courses, webinars, the drip engine). Sent after the transaction
that changed access has committed, with ``send_robust``: a failing receiver is logged and
can never undo or block a payment.

    from payments.signals import purchase_completed

    def stop_selling(sender, order, products, **kwargs):
        # end the sequences that were selling these products to order.email
        ...

    purchase_completed.connect(stop_selling)  # in your AppConfig.ready()

purchase_completed(sender=Order, order=Order, products=list[Product])
    An order became paid: the buyer has access to ``products``. Sent once per order.
access_revoked(sender=Order, order=Order, products=list[Product], reason=str)
    A refund, dispute or ended subscription took access away.
"""

from django.dispatch import Signal

purchase_completed = Signal()
access_revoked = Signal()
