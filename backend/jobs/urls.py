from django.urls import path

from backend.interop.api import JobFhirApi, JobSrApi
from backend.jobs.api import (
    BatchCollectionApi,
    BatchDetailApi,
    JobCancelApi,
    JobCollectionApi,
    JobDetailApi,
    JobResultCsvApi,
)

app_name = "jobs"
urlpatterns = [
    path("jobs", JobCollectionApi.as_view(), name="collection"),
    path("jobs/<str:job_id>", JobDetailApi.as_view(), name="detail"),
    path("jobs/<str:job_id>/cancel", JobCancelApi.as_view(), name="cancel"),
    path("jobs/<str:job_id>/result.csv", JobResultCsvApi.as_view(), name="result_csv"),
    path("jobs/<str:job_id>/sr.dcm", JobSrApi.as_view(), name="sr"),
    path("jobs/<str:job_id>/fhir", JobFhirApi.as_view(), name="fhir"),
    path("batches", BatchCollectionApi.as_view(), name="batches"),
    path("batches/<str:batch_id>", BatchDetailApi.as_view(), name="batch"),
]
