"""Prepare protected files for stamped delivery ahead of their first download."""

from django.core.management.base import BaseCommand, CommandError

from media.exceptions import DeliveryError
from media.stamping.prepare import is_derived_name, prepared_get
from media.storage import protected_storage


class Command(BaseCommand):
    help = (
        "Prepare protected files (PDF bases, EPUB/ZIP directories) for per-buyer stamping "
        "and report any that cannot be stamped. Name files, or a folder with --prefix."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", help="Storage names of protected files.")
        parser.add_argument("--prefix", help="Every file under this folder of the store.")

    def handle(self, *args, names, prefix, **options):
        storage = protected_storage()
        if prefix:
            names = [*names, *self._walk(storage, prefix.rstrip("/"))]
        if not names:
            raise CommandError("Name at least one file, or a folder with --prefix.")
        problems = 0
        for name in names:
            try:
                prepared = prepared_get(name, storage=storage)
            except DeliveryError as exc:
                problems += 1
                self.stderr.write(f"{name}: {exc}")
                continue
            if prepared.problem:
                problems += 1
                self.stdout.write(f"{name}: NOT STAMPABLE: {prepared.problem}")
            else:
                self.stdout.write(
                    f"{name}: ready ({prepared.kind}, {prepared.base_length:,} bytes)"
                )
        if problems:
            raise CommandError(f"{problems} of {len(names)} files cannot be stamped.")

    def _walk(self, storage, folder: str):
        directories, files = storage.listdir(folder)
        for name in files:
            full = f"{folder}/{name}" if folder else name
            if not is_derived_name(full):
                yield full
        for directory in directories:
            yield from self._walk(storage, f"{folder}/{directory}" if folder else directory)
