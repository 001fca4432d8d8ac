class FunnelError(Exception):
    """A visitor-facing problem; the message is safe to show."""

    message = "Something went wrong. Please try again."

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message


class InvalidEmail(FunnelError):
    message = "Please enter a valid email address, like name@example.com."


class ConsentMissing(FunnelError):
    message = (
        "Please tick the box to agree to receive emails — we cannot send the download otherwise."
    )


class FormNotFound(FunnelError):
    message = "This sign-up form no longer exists. Please reload the page."


class RateLimited(FunnelError):
    message = "Too many sign-ups from here just now. Please wait a few minutes and try again."


class SuspectedBot(FunnelError):
    message = "That was quicker than we expected. Please wait a moment and send the form again."


class TokenInvalid(FunnelError):
    message = "This link is not valid. Please copy the whole link from the email, or sign up again."


class TokenExpired(FunnelError):
    message = (
        "This confirmation link has expired. Please sign up again and we will send a fresh one."
    )


class TokenUsed(FunnelError):
    message = (
        "This link was already used. Your address is confirmed; the download is in your inbox."
    )
