"""Media work has a queue of its own (settings.CELERY_TASK_ROUTES): a long transcode,
watermark or PDF preparation never holds confirmation or drip mail up behind it."""

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.signals import before_task_publish
from django.conf import settings
from django.core.files.base import ContentFile
from django.utils import timezone

from config.celery_app import app
from core.services import email_enqueue
from funnels.tasks_sequences import drip_schedule
from media.downloads import download_prepare_later
from media.models import Video
from media.services import video_files_discard, video_requeue_stale, video_upload_received
from media.stamping.samples import sample_pdf
from media.tasks import video_requeue_stale as video_requeue_stale_task
from media.tasks import video_transcode
from tests.harness.celery_worker import Broker, app_publishing_to
from tests.harness.processes import PROJECT_ROOT, ServerProcess, running
from tests.harness.waiting import wait_until

MEDIA_TASKS = {
    "media.tasks.video_transcode",
    "media.tasks.video_watermark",
    "media.tasks.video_files_delete",
    "media.stamping.tasks.download_prepare",
}
PREPARE = "media.stamping.tasks.download_prepare"


def settings_router():
    """The router a process gets from the Django settings (the suite's own app is pointed
    at per-session queues by the harness)."""
    fresh = Celery("routes", set_as_current=False)
    fresh.config_from_object("django.conf:settings", namespace="CELERY")
    return fresh.amqp.router


@pytest.fixture
def quiet_broker(celery_broker) -> Broker:
    """Queues of this test's own that no worker consumes: what is published stays there."""
    broker = Broker(url=celery_broker.url, queue=f"routes-{uuid.uuid4().hex[:10]}")
    with app_publishing_to(app, broker):
        yield broker


@pytest.fixture
def routed():
    """[(task name, routing key)] of every publish, from the same signal as `published`."""
    sent = []

    def record(sender=None, routing_key=None, **kwargs):
        sent.append((sender, routing_key))

    before_task_publish.connect(record)
    yield sent
    before_task_publish.disconnect(record)


def waiting(broker: Broker) -> dict[str, list[str]]:
    """The task names waiting in each of `broker`'s queues in Redis, oldest first."""
    client = redis.Redis.from_url(broker.url)
    try:
        return {
            queue: [
                json.loads(message)["headers"]["task"]
                for message in reversed(client.lrange(queue, 0, -1))
            ]
            for queue in (broker.queue, broker.media_queue)
        }
    finally:
        client.close()


# --- The rule ----------------------------------------------------------------------------------


def test_media_tasks_go_to_the_media_queue_and_every_other_task_to_the_default_queue():
    # given every task the project registers
    app.loader.import_default_modules()
    names = {name for name in app.tasks if not name.startswith("celery.")}
    assert names >= MEDIA_TASKS

    # when each is routed as the settings say
    router = settings_router()
    queues = {name: router.route({}, name)["queue"].name for name in names}

    # then the media jobs, and only they, are on the media queue
    assert settings.CELERY_MEDIA_QUEUE != settings.CELERY_TASK_DEFAULT_QUEUE
    assert {name for name, queue in queues.items() if queue == settings.CELERY_MEDIA_QUEUE} == (
        MEDIA_TASKS
    )
    assert {queue for name, queue in queues.items() if name not in MEDIA_TASKS} == {
        settings.CELERY_TASK_DEFAULT_QUEUE
    }


def test_every_scheduled_task_runs_on_the_default_queue_even_the_video_sweep():
    # The sweep only re-queues; behind a transcode on the media queue it would wait for the
    # very job it looks after, and pile up while the media worker is busy or down.
    router = settings_router()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "media.tasks.video_requeue_stale" in scheduled
    for name in scheduled:
        assert router.route({}, name)["queue"].name == settings.CELERY_TASK_DEFAULT_QUEUE, name


def test_the_media_queue_is_named_by_celery_media_queue_in_the_environment():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    env |= {"CELERY_MEDIA_QUEUE": "media-elsewhere", "CELERY_TASK_DEFAULT_QUEUE": "mail-here"}
    script = (
        "from django.conf import settings; import json; "
        "print(json.dumps(settings.CELERY_TASK_ROUTES))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    routes = json.loads(out)
    assert routes["media.tasks.*"] == {"queue": "media-elsewhere"}
    assert routes["media.stamping.tasks.*"] == {"queue": "media-elsewhere"}
    assert routes["media.tasks.video_requeue_stale"] == {"queue": "mail-here"}


# --- Publishing through the normal paths -------------------------------------------------------


def test_media_work_queued_on_commit_is_published_to_the_media_queue_and_mail_to_the_default(
    db, quiet_broker, published, routed, django_capture_on_commit_callbacks
):
    # given a video and an uploaded worksheet
    video = Video.objects.create(title="Week 1", source="videos/sources/week1.mp4")

    # when their processing is queued as the upload forms do, beside an email and the drip
    with django_capture_on_commit_callbacks(execute=True):
        video_upload_received(video=video)
        download_prepare_later("downloads/worksheet.pdf")
        video_files_discard(uid=str(video.uid), source_name="videos/sources/old.mp4")
        receipt = email_enqueue(to="a@example.com", subject="Hi", text_body="Hi", kind="test")
    drip_schedule.delay()

    # then media work waits on the media queue, the rest on the default queue
    assert published == [
        ("media.tasks.video_transcode", [video.pk]),
        (PREPARE, ["downloads/worksheet.pdf"]),
        ("media.tasks.video_files_delete", [str(video.uid), "videos/sources/old.mp4"]),
        ("core.tasks.send_outbound_email", [receipt.pk]),
        ("funnels.tasks_sequences.drip_schedule", []),
    ]
    media, default = quiet_broker.media_queue, quiet_broker.queue
    assert [key for _name, key in routed] == [media, media, media, default, default]
    assert waiting(quiet_broker) == {
        default: ["core.tasks.send_outbound_email", "funnels.tasks_sequences.drip_schedule"],
        media: ["media.tasks.video_transcode", PREPARE, "media.tasks.video_files_delete"],
    }


def test_sweeps_run_on_the_default_queue_and_put_the_media_work_they_find_on_the_media_queue(
    db, quiet_broker, published, routed
):
    # given a video whose transcode message was lost half an hour ago
    now = timezone.now()
    lost = Video.objects.create(title="Lost", source="videos/sources/lost.mp4")
    Video.objects.filter(pk=lost.pk).update(updated_at=now - timedelta(minutes=31))

    # when the scheduler queues the sweep, the sweep runs, and a sweep re-queues by id
    video_requeue_stale_task.delay()
    assert video_requeue_stale(now=now) == 1
    assert video_transcode.requeue([lost.pk]) == 1

    # then the sweep itself is default-queue work and the transcodes are media work
    assert published == [
        ("media.tasks.video_requeue_stale", []),
        ("media.tasks.video_transcode", [lost.pk]),
        ("media.tasks.video_transcode", [lost.pk]),
    ]
    media, default = quiet_broker.media_queue, quiet_broker.queue
    assert [key for _name, key in routed] == [default, media, media]
    assert waiting(quiet_broker) == {
        default: ["media.tasks.video_requeue_stale"],
        media: ["media.tasks.video_transcode"] * 2,
    }


# --- Consumed ----------------------------------------------------------------------------------


def test_the_test_worker_consumes_a_media_task_queued_the_normal_way(
    transactional_db, celery_worker, server_protected_storage, published, routed
):
    # given a worksheet in the store the worker reads
    name = server_protected_storage.save(
        f"downloads/routes-{uuid.uuid4().hex[:8]}.pdf", ContentFile(sample_pdf(pages=1))
    )

    # when its preparation is queued as an upload queues it (autocommit: at once)
    download_prepare_later(name)

    # then it went to the media queue, and the worker prepared the file
    assert published == [(PREPARE, [name])]
    assert routed == [(PREPARE, celery_worker.media_queue)]
    wait_until(
        lambda: server_protected_storage.exists(name + ".stamping.json"),
        timeout=60,
        what="the worker to prepare the worksheet",
    )


def procfile_command(path: Path, process: str) -> str:
    for line in path.read_text().splitlines():
        name, colon, command = line.partition(":")
        if colon and name == process:
            return command.strip()
    raise LookupError(f"no {process}: line in {path}")


def test_the_demo_worker_takes_media_tasks_from_the_folder_broker(tmp_path, harness_log_dir):
    # given the demo's settings (no REDIS_URL: the folder broker) in a var/ of this test's own
    var = tmp_path / "var"
    (var / "protected").mkdir(parents=True)
    (var / "protected" / "worksheet.pdf").write_bytes(sample_pdf(pages=1))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DJANGO_DEBUG": "true",
        "LODESTONE_VAR_DIR": str(var),
        "LODESTONE_PROTECTED_ROOT": str(var / "protected"),
        "DATABASE_URL": f"sqlite:///{var / 'demo.sqlite3'}",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("REDIS_URL", "CELERY_TASK_DEFAULT_QUEUE", "CELERY_MEDIA_QUEUE", "EMAIL_URL"):
        env.pop(name, None)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)

    # when a web process queues a worksheet's preparation
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from media.downloads import download_prepare_later; "
            "download_prepare_later('worksheet.pdf')",
        ],
        env=env,
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    queue_dir = var / "celery" / "queue"
    assert [p.name.partition(".")[2] for p in queue_dir.iterdir()] == ["lodestone-media.msg"]

    # then infra/Procfile.demo's one worker takes it from the media queue and prepares it
    command = procfile_command(PROJECT_ROOT / "infra" / "Procfile.demo", "worker")
    worker = ServerProcess(
        name="demo Celery worker",
        fixture="",
        argv=["sh", "-c", command],
        log_path=harness_log_dir / f"demo-worker-{uuid.uuid4().hex[:6]}.log",
        env=env,
    )
    with running(worker):
        wait_until(
            lambda: (var / "protected" / "worksheet.pdf.stamping.json").exists(),
            timeout=60,
            what="the demo worker to prepare the worksheet",
            interval=0.2,
        )
    assert not list(queue_dir.glob("*.msg"))
    assert f"Task {PREPARE}[" in worker.log_path.read_text()
