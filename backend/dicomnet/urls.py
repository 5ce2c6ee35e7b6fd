from django.urls import path

from backend.dicomnet.api import UnscoredListApi

app_name = "dicomnet"
urlpatterns = [
    path("dicom/unscored", UnscoredListApi.as_view(), name="unscored"),
]
