"""The web app: server-rendered pages (Jinja2) with a small vanilla-JS layer that calls the
JSON API. No build step and no CDN: it works on an air-gapped server."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from facesearch.governance import Governance

#: page -> (menu title or None, roles that may open it)
PAGES = {
    "search": ("Search", ("admin", "investigator")),
    "photo": (None, ("admin", "investigator")),
    "collections": ("Collections", ("admin", "investigator")),
    "subjects": ("Subjects", ("admin", "investigator")),
    "subject": (None, ("admin", "investigator")),
    "clusters": ("Clusters", ("admin", "investigator")),
    "cluster": (None, ("admin", "investigator")),
    "admin": ("Admin", ("admin",)),
    "account": (None, ("admin", "investigator", "auditor")),
    "audit": ("Audit", ("auditor",)),
}


def add_web_routes(app: FastAPI, gov: Governance) -> None:
    templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

    def page_user(request: Request):
        token = request.cookies.get("fs_session")
        found = gov.accounts.session_user(token) if token else None
        return found

    def render(request: Request, page: str, **context) -> Response:
        found = page_user(request)
        if found is None:
            return RedirectResponse("/login", status_code=303)
        user, csrf = found
        if user.role not in PAGES[page][1]:
            home = "/audit" if user.role == "auditor" else "/"
            return templates.TemplateResponse(request, "denied.html", {"user": user, "csrf": csrf, "home": home,
                                                                      "pages": _menu(user)}, status_code=403)
        return templates.TemplateResponse(request, f"{page}.html", {"user": user, "csrf": csrf, "page": page,
                                                                   "pages": _menu(user), **context})

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "login.html", {})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def search_page(request: Request) -> Response:
        found = page_user(request)
        if found is not None and found[0].role == "auditor":
            return RedirectResponse("/audit", status_code=303)
        return render(request, "search")

    @app.get("/photo/{face_id}", response_class=HTMLResponse, include_in_schema=False)
    def photo_page(request: Request, face_id: int) -> Response:
        return render(request, "photo", face_id=face_id)

    @app.get("/collections", response_class=HTMLResponse, include_in_schema=False)
    def collections_page(request: Request) -> Response:
        return render(request, "collections")

    @app.get("/subjects", response_class=HTMLResponse, include_in_schema=False)
    def subjects_page(request: Request) -> Response:
        return render(request, "subjects")

    @app.get("/subjects/{subject_id}", response_class=HTMLResponse, include_in_schema=False)
    def subject_page(request: Request, subject_id: int) -> Response:
        return render(request, "subject", subject_id=subject_id)

    @app.get("/clusters", response_class=HTMLResponse, include_in_schema=False)
    def clusters_page(request: Request, collection: str = "") -> Response:
        return render(request, "clusters", collection=collection)

    @app.get("/clusters/{cluster_id}", response_class=HTMLResponse, include_in_schema=False)
    def cluster_page(request: Request, cluster_id: int) -> Response:
        return render(request, "cluster", cluster_id=cluster_id)

    @app.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    def admin_page(request: Request) -> Response:
        return render(request, "admin")

    @app.get("/account", response_class=HTMLResponse, include_in_schema=False)
    def account_page(request: Request) -> Response:
        return render(request, "account")

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(request: Request) -> Response:
        return render(request, "audit")


def _menu(user) -> list[tuple[str, str]]:
    paths = {"search": "/", "collections": "/collections", "admin": "/admin", "audit": "/audit"}
    paths["subjects"] = "/subjects"
    paths["clusters"] = "/clusters"
    return [(paths[key], title) for key, (title, roles) in PAGES.items() if title and user.role in roles]
