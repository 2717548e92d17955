"""Security headers on every response the app sends: pages, the API, static files, media
and error pages alike (issue 16 item 7).

The policy allows scripts and styles only from our own origin, so an injected `<script>`
or `onclick=` never runs; no page may be framed (the one-click Generate, Pay and Logout
forms cannot be overlaid by another site); HSTS only where the site is served over HTTPS.
"""
from __future__ import annotations

from flask import Flask

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    # poster frames and the inline SVG QR code; data: for the favicon fallback only
    "img-src 'self' data:",
    "media-src 'self'",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])

PERMISSIONS_POLICY = ", ".join([
    "camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()", "serial=()",
    "hid=()", "magnetometer=()", "gyroscope=()", "accelerometer=()",
    "display-capture=()", "fullscreen=(self)",
])

# two years with subdomains, the value hstspreload.org asks for
HSTS = "max-age=63072000; includeSubDomains"


def security_headers(hsts: bool) -> dict[str, str]:
    """The headers every response carries; HSTS only when `hsts`."""
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Permissions-Policy": PERMISSIONS_POLICY,
        # for browsers that predate frame-ancestors
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if hsts:
        headers["Strict-Transport-Security"] = HSTS
    return headers


def init_app(app: Flask) -> None:
    """Add the headers after every request. HSTS defaults to on outside development
    (`HSTS=false` turns it off, e.g. behind a plain-HTTP test deployment)."""
    development = app.debug or app.testing
    hsts = app.config.get("HSTS")
    headers = security_headers(not development if hsts is None else bool(hsts))

    @app.after_request
    def _add_security_headers(response):
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
