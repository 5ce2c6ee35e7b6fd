from django.urls import path

from backend.jobs.api import JobCollectionApi, JobDetailApi

app_name = "jobs"
urlpatterns = [
    path("jobs", JobCollectionApi.as_view(), name="collection"),
    path("jobs/<str:job_id>", JobDetailApi.as_view(), name="detail"),
]
