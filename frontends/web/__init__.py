"""The Quart front-end: HTTP in, `Gateway` calls, HTTP out.  No request logic lives here."""

from frontends.web.app import create_app

__all__ = ["create_app"]
