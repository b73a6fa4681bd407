"""GET /docs: the API description rendered by Swagger UI, whose assets ship inside the wheel (no CDN, works offline)."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory
from quart_schema import hide

DOCS_PATH = "/docs"
DOCS_ASSETS_PATH = "/docs/assets"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "static" / "swagger-ui"

blueprint = Blueprint("docs", __name__)

# validatorUrl null: Swagger UI would otherwise send the description to an online validator for its badge.
_PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Gyoza API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{DOCS_ASSETS_PATH}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{DOCS_ASSETS_PATH}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
    }});
  </script>
</body>
</html>
"""


@blueprint.get(DOCS_PATH)
@hide
async def docs_page() -> Response:
    return Response(_PAGE, content_type="text/html; charset=utf-8")


@blueprint.get(f"{DOCS_ASSETS_PATH}/<path:name>")
@hide
async def docs_asset(name: str) -> Response:
    """A Swagger UI file (404 for anything else: send_from_directory keeps to the directory)."""
    return await send_from_directory(ASSETS_DIR, name)
