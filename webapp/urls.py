from django.contrib import admin
from django.urls import include, path

from webapp import accounts
from webapp.api import profile
from webapp.api import views as api
from webapp.catalog import explore
from webapp.catalog import views as catalog
from webapp.curation import views as curation
from webapp.jobs import views as jobs
from webapp.search import versions
from webapp.search import views as search

urlpatterns = [
    path("", catalog.home, name="home"),
    path("landmarks/", catalog.landmark_list, name="landmark-list"),
    path("landmarks/<str:landmark_id>/", catalog.landmark_detail, name="landmark-detail"),
    path("landmarks/<str:landmark_id>/map/", explore.landmark_map, name="landmark-map"),
    path("images/", explore.image_list, name="image-list"),
    path("images/<str:image_id>/", catalog.image_detail, name="image-detail"),
    path("images/<str:image_id>/thumb.jpg", catalog.image_thumbnail, name="image-thumbnail"),
    path("images/<str:image_id>/preview.jpg", catalog.image_thumbnail, {"alias": "preview"}, name="image-preview"),
    path("jobs/", jobs.job_list, name="job-list"),
    path("jobs/new/", jobs.job_new, name="job-new"),
    path("jobs/<int:pk>/", jobs.job_detail, name="job-detail"),
    path("jobs/<int:pk>/cancel/", jobs.job_cancel, name="job-cancel"),
    path("jobs/<int:pk>/retry/", jobs.job_retry, name="job-retry"),
    path("search/", search.search_home, name="search"),
    path("search/history/", search.search_history, name="search-history"),
    path("search/<uuid:uid>/", search.search_results, name="search-results"),
    path("search/<uuid:uid>/photo.jpg", search.query_photo, name="search-photo"),
    path("search/<uuid:uid>/map/", explore.search_map, name="search-map"),
    path("search/<uuid:uid>/again/", search.search_rerun, name="search-rerun"),
    path("search/<uuid:uid>/match/<str:image_id>/", search.why_match, name="search-match"),
    path("search/<uuid:uid>/share/", search.search_share, name="search-share"),
    path("search/<uuid:uid>/delete/", search.search_delete, name="search-delete"),
    # The same pages through a share link: the token, not the search's id, names the search.
    path("search/shared/<str:token>/", search.search_results, name="search-shared-results"),
    path("search/shared/<str:token>/photo.jpg", search.query_photo, name="search-shared-photo"),
    path("search/shared/<str:token>/map/", explore.search_map, name="search-shared-map"),
    path("search/shared/<str:token>/again/", search.search_rerun, name="search-shared-rerun"),
    path("search/shared/<str:token>/match/<str:image_id>/", search.why_match, name="search-shared-match"),
    path("models/", versions.model_list, name="model-list"),
    path("models/<int:pk>/", versions.model_detail, name="model-detail"),
    path("models/<int:pk>/activate/", versions.model_activate, name="model-activate"),
    path("indexes/<int:pk>/activate/", versions.index_activate, name="index-activate"),
    path("indexes/<int:pk>/evaluate/", versions.index_evaluate, name="index-evaluate"),
    path("models/loop/", versions.loop_start, name="loop-start"),
    path("models/loops/", versions.loop_status, name="loop-status"),
    path("curation/", curation.queue, name="curation-queue"),
    path("curation/clusters/<int:pk>/", curation.cluster_detail, name="cluster-detail"),
    path("curation/clusters/<int:pk>/apply/", curation.cluster_apply, name="cluster-apply"),
    path("curation/changes/<int:pk>/undo/", curation.undo_change, name="change-undo"),
    path("curation/undo/", curation.undo_batch, name="batch-undo"),
    path("curation/bulk/", curation.bulk_preview, name="bulk-preview"),
    path("curation/bulk/accept/", curation.bulk_accept, name="bulk-accept"),
    path("curation/images/<str:image_id>/takedown/", curation.image_takedown, name="image-takedown"),
    path("curation/landmarks/", curation.landmark_autocomplete, name="landmark-autocomplete"),
    path("api/search", api.search, name="api-search"),
    path("api/landmarks/<str:landmark_id>", api.landmark, name="api-landmark"),
    path("api/images/<str:image_id>", api.image, name="api-image"),
    path("accounts/profile/", profile.profile, name="profile"),
    path("accounts/login/", accounts.LoginView.as_view(), name="login"),
    path("accounts/password_reset/", accounts.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/password_reset/done/", accounts.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
