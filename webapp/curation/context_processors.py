from webapp.curation.roles import ADMIN, CURATOR, has_role


def roles(request):
    """``roles.curator`` / ``roles.admin`` for templates (menus and buttons; the server checks again)."""
    user = request.user
    return {"roles": {"curator": has_role(user, CURATOR), "admin": has_role(user, ADMIN)}}
