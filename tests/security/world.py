"""The data the security suite attacks: a published course with a paid lesson (video and
a stamped download), a landing page with an opt-in form, a confirmed subscriber with
their signed links, a buyer with an order, a buyer of another product, and a creator.

Built once per test through `world` (see conftest.py); every URL the authorisation
matrix requests is made from these rows.
"""

import uuid
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.utils import timezone

from courses.models import LessonPage
from funnels import services as funnel_services
from funnels.models import LandingPage, LeadMagnet, Subscriber
from funnels.sequences import tracking
from media import delivery, playlists
from media.models import Video
from payments import services as payment_services
from payments.models import Order, OrderItem, Product
from tests.courses.conftest import CourseTree, course_tree_install, publish_child
from tests.funnels.conftest import MINIMAL_PDF
from tests.harness.wagtail_pages import home_page_install

ROLES = ("anonymous", "subscriber", "other_buyer", "buyer", "staff")
OPTIN_FORM_ID = "5d1c8a52-6a3e-4b7c-9a0e-0c8f6f1b2a11"
CLICK_TARGET = "https://offers.lodestone-demo.fi/launch?utm_source=drip"
CHECKOUT_SESSION_ID = "cs_test_securitysuite0001"
RENDITION = {
    "name": "360p",
    "width": 640,
    "height": 360,
    "playlist": "360p/index.m3u8",
    "bandwidth": 800_000,
    "average_bandwidth": 700_000,
    "codecs": "avc1.64001e,mp4a.40.2",
    "frame_rate": 25.0,
    "segments": 1,
    "bytes": 2048,
}
PLAYLIST = (
    "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n"
    '#EXT-X-MAP:URI="init.mp4"\n#EXTINF:6.000,\nseg-00000.m4s\n#EXT-X-ENDLIST\n'
)


@dataclass
class World:
    tree: CourseTree
    landing: LandingPage
    magnet: LeadMagnet
    subscriber: Subscriber
    video: Video
    buyer: object
    other_buyer: object
    staff: object
    order: Order
    links: dict[str, str] = field(default_factory=dict)

    @property
    def download(self):
        return self.tree.paid_lesson.downloads.get()


def path_of(url: str) -> str:
    """Our absolute links (emails) as paths for the test client."""
    from django.conf import settings

    return url.removeprefix(settings.SITE_URL)


def ready_video(title: str = "Write your promise") -> Video:
    """A READY video whose tiny HLS files are in the protected store."""
    storage = storages["protected"]
    video = Video(title=title)
    video.source.save("lesson.mp4", ContentFile(b"source"), save=False)
    video.save()
    prefix = f"videos/{video.uid}/hls/sec0001"
    storage.save(f"{prefix}/360p/index.m3u8", ContentFile(PLAYLIST.encode()))
    storage.save(f"{prefix}/360p/init.mp4", ContentFile(b"\x00" * 64))
    storage.save(f"{prefix}/360p/seg-00000.m4s", ContentFile(b"\x00" * 1024))
    storage.save(f"{prefix}/poster.jpg", ContentFile(b"\xff\xd8\xff\xd9"))
    Video.objects.filter(pk=video.pk).update(
        status=Video.Status.READY,
        progress=100,
        hls_prefix=prefix,
        renditions=[RENDITION],
        poster=f"{prefix}/poster.jpg",
        duration_seconds=6,
        width=640,
        height=360,
    )
    video.refresh_from_db()
    return video


def paid_order(*, buyer, tree: CourseTree, session_id: str = CHECKOUT_SESSION_ID) -> Order:
    price = tree.offer.prices.get()
    order = Order.objects.create(
        buyer=buyer,
        email=buyer.email,
        offer=tree.offer,
        price=price,
        offer_slug=tree.offer.slug,
        offer_title=tree.offer.title,
        price_kind=price.kind,
        stripe_checkout_session_id=session_id,
        stripe_payment_intent_id="pi_securitysuite0001",
        amount_subtotal=price.amount,
        amount_total=price.amount,
        currency=price.currency,
        status=Order.Status.PAID,
        paid_at=timezone.now(),
    )
    item = OrderItem.objects.create(
        order=order,
        role=OrderItem.Role.MAIN,
        offer=tree.offer,
        price=price,
        title=tree.offer.title,
        amount=price.amount,
        currency=price.currency,
    )
    item.products.add(tree.product)
    return order


def world_build(django_user_model) -> World:
    home = home_page_install(title="Northwind Academy")
    tree = course_tree_install(home, with_download=True)
    video = ready_video()
    LessonPage.objects.filter(pk=tree.paid_lesson.pk).update(video=video)

    magnet = LeadMagnet(title="Launch Checklist", download_filename="launch-checklist.pdf")
    magnet.file.save("launch-checklist.pdf", ContentFile(MINIMAL_PDF), save=False)
    magnet.save()
    landing = publish_child(
        home,
        LandingPage(
            title="Free checklist",
            slug="free-checklist",
            body=[
                ("hero", {"headline": "Launch without the panic"}),
                (
                    "optin_form",
                    {
                        "heading": "Get the checklist",
                        "magnet": magnet,
                        "button_label": "Send it",
                        "consent_text": "Send me the checklist.",
                        "double_opt_in": True,
                    },
                ),
            ],
        ),
    )
    # The block ids of a page built in code are random: fix the form's, so URLs are known.
    landing.body[1].id = OPTIN_FORM_ID
    landing.save()

    subscriber = Subscriber.objects.create(
        email="reader@lodestone-demo.fi",
        name="Reader",
        time_zone="Europe/Helsinki",
        status=Subscriber.Status.CONFIRMED,
        confirmed_at=timezone.now(),
    )
    buyer = django_user_model.objects.create_user(email="leila@example.com", password="-")
    payment_services.entitlement_grant(user=buyer, product=tree.product)
    other_product = Product.objects.create(
        kind=Product.Kind.COURSE, slug="course-other", title="Another course"
    )
    other_buyer = django_user_model.objects.create_user(email="otto@example.com", password="-")
    payment_services.entitlement_grant(user=other_buyer, product=other_product)
    staff = django_user_model.objects.create_superuser(email="maya@example.com", password="-")
    order = paid_order(buyer=buyer, tree=tree)

    world = World(
        tree=tree,
        landing=landing,
        magnet=magnet,
        subscriber=subscriber,
        video=video,
        buyer=buyer,
        other_buyer=other_buyer,
        staff=staff,
        order=order,
    )
    confirm_token = funnel_services.confirm_token_issue(
        subscriber=subscriber, landing_page=landing, magnet=magnet
    )
    world.links = {
        "confirm": f"/f/confirm/{confirm_token}/",
        "download": funnel_services.magnet_download_url(subscriber, magnet, absolute=False),
        "unsubscribe": path_of(funnel_services.unsubscribe_url(subscriber)),
        "my_data": path_of(funnel_services.manage_url(subscriber)),
        "click": path_of(tracking.click_url(1, CLICK_TARGET)),
        "open": path_of(tracking.open_url(1)),
        "login": path_of(payment_services.login_link_issue(user=buyer, order=order)),
        "billing": path_of(payment_services.billing_portal_link(customer_id="cus_security0001")),
        "protected": delivery.protected_url(
            name=world.download.file.name, user_id=buyer.pk, filename="worksheet.pdf"
        ),
    }
    # The buyer's own playlist and segment URLs (bound to the buyer's account).
    master = playlists.master_for_viewer(video=video, user_id=buyer.pk)
    world.links["rendition"] = next(
        line for line in master.splitlines() if line and not line.startswith("#")
    )
    rendition = playlists.rendition_for_viewer(
        storage=storages["protected"], video=video, rendition=RENDITION, user_id=buyer.pk
    )
    world.links["segment"] = next(
        line for line in rendition.splitlines() if line and not line.startswith("#")
    )
    return world


def forged(path: str) -> str:
    """The same link with its signature's last characters changed."""
    head, _slash, tail = path.rstrip("/").rpartition("/")
    swapped = tail[:-4] + ("AAAA" if not tail.endswith("AAAA") else "BBBB")
    return f"{head}/{swapped}/"


def random_uuid() -> str:
    return str(uuid.uuid4())
