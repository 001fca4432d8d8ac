"""The protected store: course assets, lead magnets and transcoded segments.

It is the `protected` entry of STORAGES: a folder under var/ by default, a private S3
bucket (SeaweedFS in tests) when AWS_STORAGE_BUCKET_NAME is set. Nothing in it has a
public URL; media.delivery hands out short-lived signed links after a permission check.
"""

from django.core.files.storage import Storage, storages
from storages.backends.s3 import S3Storage


def protected_storage() -> Storage:
    return storages["protected"]


def is_s3(storage: Storage) -> bool:
    return isinstance(storage, S3Storage)


class ProtectedStorage(Storage):
    """A stand-in for the `protected` storage that looks it up on every use.

    A FileField resolves its storage once, when models load; through this proxy a model
    field follows the current STORAGES setting (a deployment's S3 bucket, a test's folder).
    """

    def __getattribute__(self, name):
        if name.startswith("__"):
            return object.__getattribute__(self, name)
        return getattr(storages["protected"], name)


def protected_field_storage() -> Storage:
    """For `FileField(storage=...)`: protected files, wherever the settings put them."""
    return ProtectedStorage()
