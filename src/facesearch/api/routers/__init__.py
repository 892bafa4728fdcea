"""The server's routes, one module per area, each an :class:`fastapi.APIRouter` that
``create_app`` includes. They are thin: they read the request, call governance (which checks
and audits) and shape the answer; the role is checked first, by the dependencies of
:mod:`facesearch.api.deps`."""

from facesearch.api.routers import (
    audit,
    auth,
    clusters,
    collections,
    erasure,
    faces,
    public,
    search,
    subjects,
    users,
    web,
)

#: in the order they are included (the web pages last: their paths are the least specific)
ROUTERS = [public.router, auth.router, users.router, collections.router, search.router, faces.router,
           erasure.router, audit.router, subjects.router, clusters.router, web.router]

__all__ = ["ROUTERS"]
