"""Roles as Django groups: viewers (search, explore), curators (review, relabel), admins (jobs,
settings). Each role includes the ones before it; superusers have all. Checked on the server."""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

VIEWER, CURATOR, ADMIN = "viewers", "curators", "admins"
_INCLUDED_IN = {VIEWER: {VIEWER, CURATOR, ADMIN}, CURATOR: {CURATOR, ADMIN}, ADMIN: {ADMIN}}


def has_role(user, role: str) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    if role == VIEWER:
        return True  # every logged-in account may search and explore
    groups = getattr(user, "_role_groups", None)
    if groups is None:
        groups = set(user.groups.values_list("name", flat=True))
        user._role_groups = groups  # one query per request, however many checks
    return bool(groups & _INCLUDED_IN[role])


def require_role(user, role: str) -> None:
    if not has_role(user, role):
        raise PermissionDenied(f"this needs the {role[:-1]} role")


def role_required(role: str):
    """View decorator: log in first if anonymous; 403 if the account lacks ``role``."""
    def decorate(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            require_role(request.user, role)
            return view(request, *args, **kwargs)
        return wrapped
    return decorate
