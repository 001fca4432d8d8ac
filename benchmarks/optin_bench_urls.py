"""The site's URLs plus the benchmark's baseline: "a minimal Django view that inserts one
row" (issue #8). It runs through the same middleware as the opt-in POST, reads the same
form body, and inserts the address into a one-table scratch row — in autocommit, as the
opt-in view does, so neither side pays for a transaction the other does not."""

from django.db import connection, transaction
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from config.urls import urlpatterns as site_urlpatterns


# ATOMIC_REQUESTS is on site-wide; the opt-in view opts out, and so does the baseline.
@transaction.non_atomic_requests
@csrf_exempt
@require_POST
def insert_one_row(request):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_insert (email, created_at) VALUES (%s, now())",
            [request.POST.get("email", "")[:254]],
        )
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/insert-one-row/", insert_one_row), path("", include(site_urlpatterns))]
