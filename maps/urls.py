from __future__ import annotations

from django.urls import path

from maps import views

app_name = "maps"
urlpatterns = [path("", views.index, name="index")]
