from django.contrib import admin
from django.urls import include, path

from backend.jobs.health import HealthApi

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/health", HealthApi.as_view(), name="health"),
    path("api/v1/", include("backend.jobs.urls")),
]

handler400 = "backend.core.views.bad_request"
handler404 = "backend.core.views.not_found"
handler500 = "backend.core.views.server_error"
