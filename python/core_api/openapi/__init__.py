"""The OpenAPI 3.1 document (``/api/v1/openapi.json``) and the API docs page (``/api/docs``).

The document is assembled once per process from ``base.yaml`` here and each feature's
``openapi.yaml`` (see :mod:`.document`); a clash between fragments stops start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .document import DocumentError, assemble, document, document_bytes

if TYPE_CHECKING:
    from ..config import Settings
    from ..jobs import Job
    from ..runtime import Runtime

__all__ = ["JOBS", "DocumentError", "assemble", "document", "document_bytes", "register"]

JOBS: tuple[Job, ...] = ()


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    from .resources import DocsAsset, DocsPage, OpenApiDocument

    app.add_route("/api/v1/openapi.json", OpenApiDocument())
    app.add_route("/api/docs", DocsPage())
    app.add_route("/api/docs/{name}", DocsAsset())
