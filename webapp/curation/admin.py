"""The curation actions in the Django admin: the same functions as the review pages, so every admin
relabel is audited too."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm

from webapp.catalog.admin import ImageAdmin, LandmarkAdmin
from webapp.catalog.models import Image, Landmark
from webapp.curation import actions
from webapp.curation.models import CleaningRun, LabelChange, NoiseCluster, Verdict


class LandmarkActionForm(ActionForm):
    landmark = forms.CharField(required=False, label="Landmark id",
                               help_text="Target for 'relabel' and 'merge'.")


def _target(request, modeladmin) -> Landmark | None:
    ext = request.POST.get("landmark", "").strip()
    target = Landmark.objects.filter(external_id=ext).first()
    if target is None:
        modeladmin.message_user(request, f"Unknown landmark id {ext!r}.", messages.ERROR)
    return target


class CuratedImageAdmin(ImageAdmin):
    action_form = LandmarkActionForm
    actions = ["relabel", "mark_not_landmark", "keep_as_is", "accept_latest_suggestion", "take_down", "restore"]
    list_filter = ["split", "dataset", "taken_down"]

    @admin.action(description="Take selected images down (hidden from search at once)")
    def take_down(self, request, queryset):
        n = len(actions.take_down(list(queryset), acting_user=request.user, reason="admin"))
        self.message_user(request, f"{n} images taken down.")

    @admin.action(description="Restore selected images to search")
    def restore(self, request, queryset):
        n = len(actions.take_down(list(queryset), acting_user=request.user, reason="admin", restore=True))
        self.message_user(request, f"{n} images restored.")

    @admin.action(description="Relabel selected images to the landmark id given")
    def relabel(self, request, queryset):
        if target := _target(request, self):
            n = len(actions.relabel(list(queryset), target, acting_user=request.user, reason="admin"))
            self.message_user(request, f"{n} images relabelled to {target}.")

    @admin.action(description="Mark selected images as not a landmark")
    def mark_not_landmark(self, request, queryset):
        n = len(actions.mark_not_landmark(list(queryset), acting_user=request.user, reason="admin"))
        self.message_user(request, f"{n} images marked as not a landmark.")

    @admin.action(description="Keep selected labels as they are")
    def keep_as_is(self, request, queryset):
        n = len(actions.keep_as_is(list(queryset), acting_user=request.user, reason="admin"))
        self.message_user(request, f"{n} labels confirmed.")

    @admin.action(description="Accept the latest cleaning run's suggestions")
    def accept_latest_suggestion(self, request, queryset):
        run = CleaningRun.objects.first()
        if run is None:
            self.message_user(request, "No cleaning run yet.", messages.ERROR)
            return
        n = len(actions.accept_suggestions(list(queryset), run, acting_user=request.user))
        self.message_user(request, f"{n} suggestions from {run} accepted.")


class CuratedLandmarkAdmin(LandmarkAdmin):
    action_form = LandmarkActionForm
    actions = ["merge_into"]

    @admin.action(description="Merge selected landmarks into the landmark id given")
    def merge_into(self, request, queryset):
        if target := _target(request, self):
            n = sum(len(actions.merge_landmarks(src, target, acting_user=request.user))
                    for src in queryset.exclude(pk=target.pk))
            self.message_user(request, f"{n} images moved into {target}.")


admin.site.unregister(Image)
admin.site.register(Image, CuratedImageAdmin)
admin.site.unregister(Landmark)
admin.site.register(Landmark, CuratedLandmarkAdmin)


@admin.register(LabelChange)
class LabelChangeAdmin(admin.ModelAdmin):
    list_display = ["created_at", "image", "old_landmark", "new_landmark", "action", "decided_by", "reason"]
    list_filter = ["action"]
    search_fields = ["image__external_id", "reason"]
    list_select_related = ["image", "old_landmark", "new_landmark", "decided_by"]
    actions = ["undo"]

    def has_change_permission(self, request, obj=None):
        return False  # the audit trail is append-only

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Undo selected changes")
    def undo(self, request, queryset):
        n = sum(1 for c in queryset if actions.undo(c, acting_user=request.user))
        self.message_user(request, f"{n} changes undone.")


@admin.register(CleaningRun)
class CleaningRunAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "stats"]


@admin.register(NoiseCluster)
class NoiseClusterAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "size", "target_landmark", "confidence", "benefit", "status"]
    list_filter = ["kind", "status"]


@admin.register(Verdict)
class VerdictAdmin(admin.ModelAdmin):
    list_display = ["image", "run", "verdict", "label", "suggested_landmark", "score"]
    list_filter = ["verdict"]
    list_select_related = ["image", "run", "label", "suggested_landmark"]
