import importlib

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Load (or refresh) the demo content. Safe to run again."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, port, **options):
        facts = {}
        for app_config in apps.get_app_configs():
            if app_config.name.split(".")[0] not in {
                "core",
                "accounts",
                "funnels",
                "courses",
                "payments",
                "webinars",
                "media",
            }:
                continue
            try:
                module = importlib.import_module(f"{app_config.name}.demo")
            except ModuleNotFoundError as exc:
                if exc.name != f"{app_config.name}.demo":
                    raise
                continue
            self.stdout.write(f"Demo content: {app_config.verbose_name}")
            facts.update(module.load(stdout=self.stdout) or {})

        url = f"http://127.0.0.1:{port}/"
        site = url.rstrip("/")
        mail_dir = getattr(settings, "EMAIL_FILE_PATH", "") or "(SMTP via EMAIL_URL)"
        bar = "=" * 64
        pages = [
            (label, f"{site}{facts[key]}")
            for label, key in (
                ("Landing page with opt-in:", "landing_page_url"),
                ("Course:", "course_url"),
                ("Webinar:", "webinar_url"),
            )
            if facts.get(key)
        ]
        lines = [
            ("Lodestone demo is starting at", url),
            ("Creator admin:", f"{url}admin/"),
            *pages,
            ("Log in as:", facts.get("creator_email")),
            ("Password:", facts.get("creator_password")),
            ("Emails are written to:", mail_dir),
        ]
        self.stdout.write(
            self.style.SUCCESS(
                f"\n{bar}\n"
                + "".join(f"  {label:<30} {value}\n" for label, value in lines)
                + f"{bar}\n"
            )
        )
