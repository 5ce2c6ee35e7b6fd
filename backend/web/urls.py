from django.urls import path

from backend.web import assets, unscored, views

app_name = "web"
urlpatterns = [
    path("", views.home, name="home"),
    path("sign-in", views.sign_in, name="sign-in"),
    path("sign-out", views.sign_out, name="sign-out"),
    path("uploads", views.upload, name="upload"),
    path("watch", views.watch, name="watch"),
    path("jobs/<str:job_id>", views.job_page, name="job"),
    path("jobs/<str:job_id>/panel", views.panel, name="panel"),
    path("jobs/<str:job_id>/row", views.row, name="row"),
    path("jobs/<str:job_id>/thumbnail.png", views.thumbnail, name="thumbnail"),
    path("jobs/<str:job_id>/result.json", views.result_json, name="result-json"),
    path("jobs/<str:job_id>/result.csv", views.result_csv, name="result-csv"),
    path("jobs/<str:job_id>/cancel", views.cancel, name="cancel"),
    path("jobs/<str:job_id>/delete", views.delete, name="delete"),
    path("dicom/unscored", unscored.unscored_page, name="unscored"),
    path("favicon.ico", assets.favicon, name="favicon"),
    path("api/redoc/redoc.standalone.js", assets.redoc_bundle, name="redoc-bundle"),
]
