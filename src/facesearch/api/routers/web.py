"""The web app: server-rendered pages (Jinja2) with a small vanilla-JS layer that calls the
JSON API. No build step and no CDN: it works on an air-gapped server."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from facesearch.api.deps import SESSION_COOKIE, server_context
from facesearch.governance import UserInfo
from facesearch.governance.policy import Action, may

#: page -> (menu title or None, the action whose roles may open it: governance's table)
PAGES: dict[str, tuple[str | None, Action]] = {
    "search": ("Search", Action.SEARCH),
    "photo": (None, Action.SEARCH),
    "collections": ("Collections", Action.VIEW_COLLECTIONS),
    "subjects": ("Subjects", Action.SUBJECTS),
    "subject": (None, Action.SUBJECTS),
    "clusters": ("Clusters", Action.CLUSTERS),
    "cluster": (None, Action.CLUSTERS),
    "admin": ("Admin", Action.MANAGE_USERS),
    "account": (None, Action.OWN_ACCOUNT),
    "audit": ("Audit", Action.READ_AUDIT),
}

templates = Jinja2Templates(directory=str(Path(__file__).parent.parent / "templates"))
router = APIRouter(include_in_schema=False)


def page_user(request: Request) -> tuple[UserInfo, str] | None:
    """The user of the session cookie and the session's CSRF token, if logged in."""
    token = request.cookies.get(SESSION_COOKIE)
    return server_context(request).gov.accounts.session_user(token) if token else None


def render(request: Request, page: str, **context) -> Response:
    found = page_user(request)
    if found is None:
        return RedirectResponse("/login", status_code=303)
    user, csrf = found
    if not may(user.role, PAGES[page][1]):
        home = "/" if may(user.role, Action.SEARCH) else "/audit"
        return templates.TemplateResponse(request, "denied.html", {"user": user, "csrf": csrf, "home": home,
                                                                  "pages": _menu(user)}, status_code=403)
    return templates.TemplateResponse(request, f"{page}.html", {"user": user, "csrf": csrf, "page": page,
                                                               "pages": _menu(user), **context})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {})


@router.get("/", response_class=HTMLResponse)
def search_page(request: Request) -> Response:
    found = page_user(request)
    if found is not None and not may(found[0].role, Action.SEARCH):  # an auditor: the audit log is home
        return RedirectResponse("/audit", status_code=303)
    return render(request, "search")


@router.get("/photo/{face_id}", response_class=HTMLResponse)
def photo_page(request: Request, face_id: int) -> Response:
    return render(request, "photo", face_id=face_id)


@router.get("/collections", response_class=HTMLResponse)
def collections_page(request: Request) -> Response:
    return render(request, "collections")


@router.get("/subjects", response_class=HTMLResponse)
def subjects_page(request: Request) -> Response:
    return render(request, "subjects")


@router.get("/subjects/{subject_id}", response_class=HTMLResponse)
def subject_page(request: Request, subject_id: int) -> Response:
    return render(request, "subject", subject_id=subject_id)


@router.get("/clusters", response_class=HTMLResponse)
def clusters_page(request: Request, collection: str = "") -> Response:
    return render(request, "clusters", collection=collection)


@router.get("/clusters/{cluster_id}", response_class=HTMLResponse)
def cluster_page(request: Request, cluster_id: int) -> Response:
    return render(request, "cluster", cluster_id=cluster_id)


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request) -> Response:
    return render(request, "admin")


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request) -> Response:
    return render(request, "account")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request) -> Response:
    return render(request, "audit")


def _menu(user: UserInfo) -> list[tuple[str, str]]:
    paths = {"search": "/", "collections": "/collections", "admin": "/admin", "audit": "/audit"}
    paths["subjects"] = "/subjects"
    paths["clusters"] = "/clusters"
    return [(paths[key], title) for key, (title, action) in PAGES.items() if title and may(user.role, action)]
