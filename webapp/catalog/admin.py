from django.contrib import admin

from webapp.catalog.models import Image, Landmark


@admin.register(Landmark)
class LandmarkAdmin(admin.ModelAdmin):
    list_display = ["external_id", "name", "created_at"]
    search_fields = ["external_id", "name"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["external_id", "landmark", "split", "width", "height", "dataset"]
    list_filter = ["split", "dataset"]
    search_fields = ["external_id", "landmark__name", "landmark__external_id"]
    list_select_related = ["landmark"]
    # The label changes only through the audited actions (list actions here, or the review pages).
    readonly_fields = ["landmark", "checksum", "file_size", "width", "height", "thumbnail", "created_at"]
