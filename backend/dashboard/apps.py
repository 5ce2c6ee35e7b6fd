from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "backend.dashboard"
    label = "dashboard"
    verbose_name = "Operator dashboard"

    def ready(self) -> None:
        # The admin's own URLs and index page gain the dashboard (site.py); nothing in backend/urls.py.
        from django.contrib import admin

        from backend.dashboard.site import install

        install(admin.site)
