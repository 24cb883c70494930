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
    autocomplete_fields = ["landmark"]
    readonly_fields = ["checksum", "file_size", "width", "height", "thumbnail", "created_at"]
