"""Stamped downloads sent by a real nginx (LODESTONE_X_ACCEL): Django checks and records,
nginx sends the cached head and appends the buyer's tail. The nginx locations are taken
from infra/stack/nginx.conf.template, the stack's copy of infra/nginx/lodestone.conf."""

import hashlib
import io
import os
import re
import subprocess
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.core.management import call_command

from courses.models import LessonDownload
from media.models import DownloadDelivery
from media.stamping.prepare import forget_cached
from payments import services as payment_services
from tests.courses.conftest import course_tree_install
from tests.harness.ports import free_port
from tests.harness.wagtail_pages import home_page_install
from tests.harness.waiting import wait_until
from tests.harness.web import http_get

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "stack" / "nginx.conf.template"


def _stamped_locations(downloads_root: Path) -> str:
    text = TEMPLATE.read_text()
    start = text.index("        # Stamped downloads")
    end = text.index("        # For the load benchmark's baseline")
    return text[start:end].replace("${DOWNLOADS_ROOT}", str(downloads_root))


@pytest.fixture
def nginx(live_server, tmp_path):
    port = free_port()
    root = tmp_path / "nginx"
    root.mkdir()
    app = live_server.url.removeprefix("http://")
    conf = root / "nginx.conf"
    # Started as root, nginx's workers would drop to `nobody`, who cannot enter tmp_path.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
daemon off;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    sendfile on;
    access_log off;
    client_body_temp_path {root}; proxy_temp_path {root}; fastcgi_temp_path {root};
    uwsgi_temp_path {root}; scgi_temp_path {root};
    server {{
        listen 127.0.0.1:{port};
{_stamped_locations(tmp_path / "var" / "downloads")}
        location / {{
            proxy_pass http://{app};
            proxy_set_header Host $host;
        }}
    }}
}}
"""
    )
    process = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{port}/_stamped_tail").status,
            timeout=10,
            what="nginx",
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def course(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    settings.VAR_DIR = tmp_path / "var"
    settings.ALLOWED_HOSTS = ["*"]
    forget_cached()
    tree = course_tree_install(home_page_install(title="Northwind Academy"), with_download=True)
    yield tree
    forget_cached()


def _session(client, user) -> dict[str, str]:
    client.force_login(user)
    return {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}


def _pdf_pages_text(data: bytes, tmp_path) -> list[str]:
    path = tmp_path / "received.pdf"
    path.write_bytes(data)
    out = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    ).stdout.decode()
    return [page for page in out.split("\f") if page.strip()]


def test_nginx_sends_the_same_stamped_bytes_the_ledger_records(
    course, nginx, client, django_user_model, settings, tmp_path
):
    # given a buyer of the course, and the site behind nginx
    buyer = django_user_model.objects.create_user(
        email="leila@example.com", password="-", first_name="Leila", last_name="Ahmadi"
    )
    payment_services.entitlement_grant(user=buyer, product=course.product)
    download = LessonDownload.objects.get()
    settings.DOWNLOAD_X_ACCEL = True

    # when they download the worksheet through nginx
    answer = http_get(f"{nginx}/learn/download/{download.uuid}/", headers=_session(client, buyer))

    # then nginx sent it: stamped on every page, recorded with the hash of what arrived
    assert answer.status == 200, answer.body[:500]
    assert answer.headers["Content-Type"] == "application/pdf"
    assert answer.headers["Content-Disposition"].startswith("attachment; filename*=UTF-8''")
    assert "no-store" in answer.headers["Cache-Control"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "X-Accel-Redirect" not in answer.headers
    delivery = DownloadDelivery.objects.get()
    assert delivery.sent_sha256 == hashlib.sha256(answer.body).hexdigest()
    assert delivery.sent_size == len(answer.body)
    pages = _pdf_pages_text(answer.body, tmp_path)
    assert pages and all("leila@example.com" in page for page in pages)
    out = io.StringIO()
    call_command("trace_leak", str(tmp_path / "received.pdf"), stdout=out)
    assert "leila@example.com" in out.getvalue()
    assert delivery.marker in out.getvalue()

    # and the Python path, given the same delivery, sends byte for byte the same file
    from media.downloads import _buyer_part
    from media.stamping.pdf import Licensee
    from media.stamping.prepare import prepared_get
    from media.stamping.storage_io import read_range

    prepared = prepared_get(download.file.name)
    licensee = Licensee(
        delivery.recipient_name, buyer.email, delivery.order_reference, delivery.marker
    )
    streamed = read_range(
        storages["protected"], prepared.base_name, 0, prepared.base_length
    ) + _buyer_part(prepared, licensee, delivery.created_at)
    assert streamed == answer.body


def test_the_streaming_and_nginx_paths_agree_on_a_second_download(
    course, nginx, client, django_user_model, settings
):
    # given a buyer who downloads once through Django's streaming path
    buyer = django_user_model.objects.create_user(email="omar@example.com", password="-")
    payment_services.entitlement_grant(user=buyer, product=course.product)
    download = LessonDownload.objects.get()
    cookie = _session(client, buyer)
    streamed = http_get(f"{nginx}/learn/download/{download.uuid}/", headers=cookie)

    # when the site switches to nginx delivery and they download again
    settings.DOWNLOAD_X_ACCEL = True
    sent = http_get(f"{nginx}/learn/download/{download.uuid}/", headers=cookie)

    # then each copy matches its ledger row, and both are the same size
    first, second = DownloadDelivery.objects.order_by("created_at")
    assert streamed.status == sent.status == 200
    assert first.sent_sha256 == hashlib.sha256(streamed.body).hexdigest()
    assert second.sent_sha256 == hashlib.sha256(sent.body).hexdigest()
    assert len(streamed.body) == len(sent.body)
    assert first.marker != second.marker


def test_no_entitlement_is_refused_and_the_internal_locations_are_unreachable(
    course, nginx, client, django_user_model, settings, tmp_path
):
    # given someone who did not buy the course, and a head already in nginx's cache
    settings.DOWNLOAD_X_ACCEL = True
    buyer = django_user_model.objects.create_user(email="leila@example.com", password="-")
    payment_services.entitlement_grant(user=buyer, product=course.product)
    stranger = django_user_model.objects.create_user(email="someone@example.com", password="-")
    download = LessonDownload.objects.get()
    url = f"{nginx}/learn/download/{download.uuid}/"
    assert http_get(url, headers=_session(client, buyer)).status == 200
    heads = list((tmp_path / "var" / "downloads" / "heads").iterdir())
    tails = list((tmp_path / "var" / "downloads" / "tails").glob("*/*.bin"))
    assert len(heads) == 1 and len(tails) == 1

    # when the stranger asks for the download, and for the internal locations directly
    refused = http_get(url, headers=_session(client, stranger))
    direct_head = http_get(f"{nginx}/_stamped/{heads[0].name}?t=1/x.bin")
    tail_name = "/".join(tails[0].parts[-2:])
    direct_tail = http_get(f"{nginx}/_stamped_tail?t={tail_name}")
    direct_both = http_get(f"{nginx}/_stamped/{heads[0].name}?t={tail_name}")

    # then they get nothing, and nothing is recorded for them
    assert refused.status == 403
    assert b"%PDF" not in refused.body
    for answer in (direct_head, direct_tail, direct_both):
        assert answer.status == 404
        assert not re.search(rb"%PDF|LSM-", answer.body)
    assert DownloadDelivery.objects.count() == 1
