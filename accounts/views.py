from allauth.account.models import EmailAddress
from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def account_overview(request):
    emails = EmailAddress.objects.filter(user=request.user).order_by("-primary", "email")
    return render(request, "account/overview.html", {"emails": emails})
