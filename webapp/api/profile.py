"""The profile page, where a user gets (or replaces) their API key."""

from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from webapp.api.models import ApiToken


@require_http_methods(["GET", "POST"])
def profile(request):
    new_key = ApiToken.issue(request.user) if request.method == "POST" else None
    token = ApiToken.objects.filter(user=request.user).first()
    return render(request, "api/profile.html", {"token": token, "new_key": new_key})
