"""The peer's routes."""

from django.urls import path  # type: ignore[import-untyped]

from bench.post_office_site import views

urlpatterns = [
    path("send", views.send),
    path("ready", views.ready),
]
