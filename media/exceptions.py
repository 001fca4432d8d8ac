class DeliveryError(Exception):
    """A protected file cannot be handed out."""


class LinkExpired(DeliveryError):
    pass


class LinkInvalid(DeliveryError):
    pass
