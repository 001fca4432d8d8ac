from django.urls import path

from . import views

urlpatterns = [
    path("", views.account_overview, name="account_overview"),
    path("receipts/<int:order_id>/", views.order_receipt, name="account_order_receipt"),
]
