"""Payment errors; each message is safe to show to the buyer as it stands."""


class PaymentError(Exception):
    message = "Something went wrong with this payment. Please try again."
    status = 400

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message


class OfferUnavailable(PaymentError):
    message = "This offer is not available to buy right now. It may have ended or been withdrawn."
    status = 404


class StripeUnavailable(PaymentError):
    message = (
        "We could not reach our payment provider just now, so nothing was charged. "
        "Please try again in a few minutes."
    )
    status = 503


class PaymentsNotConfigured(StripeUnavailable):
    message = "Payments are not switched on for this site yet, so nothing was charged."


class CheckoutRefused(PaymentError):
    """Stripe refused the request (a configuration problem on our side, not the buyer's)."""

    message = (
        "The payment page could not be opened, and nothing was charged. The site owner has "
        "been told; please try again later."
    )
    status = 503


class TokenInvalid(PaymentError):
    message = "This sign-in link is not valid. Please copy the whole link from the email."


class TokenExpired(PaymentError):
    message = "This sign-in link has expired. Sign in with your email address to get a new code."


class TokenUsed(PaymentError):
    message = "This sign-in link was already used. Sign in with your email address to get a code."


class WebhookRejected(PaymentError):
    """A webhook request that is not a genuine, fresh Stripe event."""


class EventProcessingFailed(Exception):
    """Processing a stored event raised; the error is recorded on the event."""
