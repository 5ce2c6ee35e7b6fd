from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from backend.core.views import read_only
from backend.jobs.health import HealthApi
from backend.metrics.views import metrics
from backend.web.assets import RedocView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/health", HealthApi.as_view(), name="health"),
    # Prometheus: the bearer token, or loopback where allowed (docs/observability.md).
    path("metrics", metrics, name="metrics"),
    # The contract (OpenAPI 3.1) and its pages; assets served locally (drf-spectacular-sidecar).
    # GET and HEAD only: OPTIONS on the HTML pages was a 500 (found by tests/test_properties.py).
    path("api/schema/", read_only(SpectacularAPIView.as_view()), name="schema"),
    path("api/docs/", read_only(SpectacularSwaggerSplitView.as_view(url_name="schema")), name="swagger-ui"),
    path(
        "api/redoc/",
        # Its bundle from backend/web/assets.py: without the one logo ReDoc loads from the internet.
        read_only(RedocView.as_view(url_name="schema", template_name="cxrq/redoc.html")),
        name="redoc",
    ),
    path("api/v1/", include("backend.jobs.urls")),
    path("api/v1/", include("backend.dicomnet.urls")),
    # The web client for people (docs/web.md): last, so every path above keeps its meaning.
    path("", include("backend.web.urls")),
]

handler400 = "backend.core.views.bad_request"
handler404 = "backend.core.views.not_found"
handler500 = "backend.core.views.server_error"
