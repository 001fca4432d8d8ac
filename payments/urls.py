from django.urls import path

from . import views

app_name = "payments"
urlpatterns = [
    path("buy/<slug:slug>/", views.buy, name="buy"),
    path("checkout/success/", views.checkout_success, name="checkout_success"),
    path("stripe/webhook/", views.stripe_webhook, name="stripe_webhook"),
    path("login/<str:token>/", views.login_link, name="login_link"),
    path("billing/", views.billing_portal_mine, name="billing_portal_mine"),
    path("billing/<str:token>/", views.billing_portal, name="billing_portal"),
]
