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
