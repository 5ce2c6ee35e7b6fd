"""The dashboard joins the admin site: a URL among the admin's own (/admin/dashboard/, named
admin:dashboard, behind the admin's sign-in) and a link on its index page."""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.urls import path

INDEX_TEMPLATE = "admin/cxrq/index.html"


def install(site: AdminSite) -> None:
    if getattr(site, "cxrq_dashboard_installed", False):
        return
    from backend.dashboard import views

    admin_urls = site.get_urls

    def get_urls():
        # First: the admin's catch-all app_label pattern would otherwise take "dashboard/".
        return [path("dashboard/", site.admin_view(views.dashboard), name="dashboard"), *admin_urls()]

    site.get_urls = get_urls
    site.index_template = INDEX_TEMPLATE
    site.cxrq_dashboard_installed = True
