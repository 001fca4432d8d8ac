from django.conf import settings


def client_ip(request) -> str | None:
    """The visitor's address. Behind N trusted proxies (nginx, a CDN) it is the Nth address
    from the right of X-Forwarded-For; anything further left is the client's own claim."""
    hops = settings.TRUSTED_PROXY_COUNT
    if hops:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR") or None
