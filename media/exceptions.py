class DeliveryError(Exception):
    """A protected file cannot be handed out."""


class LinkExpired(DeliveryError):
    pass


class LinkInvalid(DeliveryError):
    pass


class SourceProblem(DeliveryError):
    """A creator's file cannot be prepared for per-buyer stamping. The message is for the
    creator; buyers are told only that the file cannot be delivered right now."""


class SourceCorrupt(SourceProblem):
    pass


class SourceEncrypted(SourceProblem):
    pass


class SourceMissing(DeliveryError):
    pass


class StorageUnavailable(DeliveryError):
    """The protected store did not answer: transient, the buyer should try again."""


class DownloadLimitReached(DeliveryError):
    pass


class DownloadUnavailable(DeliveryError):
    """The file cannot be stamped (see SourceProblem), and sending it unstamped is off."""
