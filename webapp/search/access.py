"""Who may open a kept search. Searches are private: the owner and admins may open one by its URL; an
anonymous search (SEARCH_PUBLIC) belongs to the browser session that ran it. The owner's "share" makes a
separate, unguessable share link (a random token, not the search's id) that anyone allowed to search may
open; "stop sharing" makes it private again. Deleting a search deletes its stored photo too."""

from __future__ import annotations

import secrets

from django.core.files.storage import default_storage
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404

from webapp.curation.roles import ADMIN, has_role
from webapp.search.models import SearchQuery

SESSION_KEY = "anonymous_searches"
REMEMBERED = 100  # anonymous searches a session keeps access to (the newest)


def remember(request, query: SearchQuery) -> None:
    """An anonymous search belongs to this browser session from now on."""
    if query.user_id is None and hasattr(request, "session"):
        mine = [u for u in request.session.get(SESSION_KEY, []) if u != str(query.uid)]
        request.session[SESSION_KEY] = (mine + [str(query.uid)])[-REMEMBERED:]


def is_owner(request, query: SearchQuery) -> bool:
    if query.user_id is not None:
        return request.user.is_authenticated and request.user.pk == query.user_id
    return hasattr(request, "session") and str(query.uid) in request.session.get(SESSION_KEY, [])


def can_view(request, query: SearchQuery) -> bool:
    return is_owner(request, query) or has_role(request.user, ADMIN)


def viewable(request, uid=None, token: str | None = None) -> SearchQuery:
    """The search by its share token, or by its id when this request may open it. Anything else is a 404,
    the same as a search that does not exist: a private search's id reveals nothing."""
    queries = SearchQuery.objects.select_related("landmark", "index_version", "model_version")
    if token is not None:
        return get_object_or_404(queries, share_token=token)
    query = get_object_or_404(queries, uid=uid)
    if not can_view(request, query):
        raise Http404("No search matches the given query.")
    return query


def owned(request, uid) -> SearchQuery:
    """The search if this request owns it (share, stop sharing, delete); 404 otherwise."""
    query = get_object_or_404(SearchQuery, uid=uid)
    if not is_owner(request, query):
        raise Http404("No search of yours matches the given query.")
    return query


def share(query: SearchQuery) -> str:
    """The search's share token, made now if it has none (a second share keeps the same link)."""
    if not query.share_token:
        query.share_token = secrets.token_urlsafe(32)
        SearchQuery.objects.filter(pk=query.pk).update(share_token=query.share_token)
    return query.share_token


def unshare(query: SearchQuery) -> None:
    """The share link stops working; sharing again makes a new one."""
    SearchQuery.objects.filter(pk=query.pk).update(share_token=None)
    query.share_token = None


def delete_search(query: SearchQuery) -> None:
    """The search, its results and (see ``delete_photo``) its stored photo."""
    query.delete()


def delete_photo(instance: SearchQuery, **_kwargs) -> None:
    """post_delete of a SearchQuery (here, in the admin, or by a cascade): its photo goes once the deletion
    commits, and stays if it is rolled back."""
    name = instance.photo.name
    if name:
        transaction.on_commit(lambda: default_storage.delete(name), robust=True)
