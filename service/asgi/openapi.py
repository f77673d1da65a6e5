"""The API page: GET / is a Swagger UI page of our own (BentoML's loads a third-party
tag-manager script; ours loads only the Swagger files BentoML serves under /static_content),
and GET /docs.json is BentoML's generated spec made to say what the service does: the
project's title, version and links instead of BentoML's boilerplate, both image media
types, the one error body, GET on /models, and an example on every request field."""

from __future__ import annotations

import copy
import json
from typing import Any

from service import __version__

BINARY = {"schema": {"type": "string", "format": "binary"}}
ERROR_SCHEMA = {
    "type": "object", "title": "Error", "required": ["error", "field"],
    "properties": {"error": {"type": "string", "description": "what is wrong, and the limit"},
                   "field": {"type": "string", "description": "the field at fault"}},
}
ERROR_STATUSES = {"400": "Bad input", "401": "Missing or wrong API key (COUNTERFEIT_API_KEY)",
                  "404": "Unknown model or job",
                  "409": "Job not finished (or, to cancel, finished)",
                  "410": "The job's result files are gone",
                  "413": "Body over COUNTERFEIT_MAX_BODY_BYTES",
                  "415": "Body of another content type than the route takes",
                  "429": "Job queue full (COUNTERFEIT_MAX_QUEUED_JOBS): see Retry-After",
                  "503": "Worker busy (COUNTERFEIT_MAX_IN_FLIGHT): see Retry-After",
                  "507": "Jobs folder full (COUNTERFEIT_JOBS_MAX_BYTES): see Retry-After"}
_GRID = ("format png: one PNG grid; format npy: a float32 .npy array (n, *image shape) in "
         "[0, 1]")
# the routes that answer pictures or arrays: what their 200 holds
IMAGE_ROUTES = {
    "/sample": _GRID,
    "/interpolate": _GRID,
    "/inpaint": "format png: a row per image: the original, the masked input, the k "
                "completions; format npy: a float32 .npy array (n, k, *image shape) in [0, 1]",
    "/invert": "format json: z, pixel_error and scores; png: each image beside its "
               "reconstruction; npy: the reconstructions, float32 (n, *image shape)",
}
OWN_ROUTES = ("/sample", "/interpolate", "/score", "/invert", "/inpaint", "/models",
              "/jobs/submit", "/jobs/status", "/jobs/result", "/jobs/cancel")
INFO = {
    "title": "Counterfeit",
    "version": __version__,
    "description": (
        "The generative adversarial nets of Goodfellow et al. (2014), served: sample "
        "images from G, walk between latents, score images with D, find the latent of "
        "an image (/invert, §7.2), complete hidden pixels (/inpaint, §7.3), and run "
        "large batch-generation jobs. Every size comes from the model's card (GET "
        "/models). A seed fixes the latents (the seed contract), so a seeded request "
        "gives the same images on any server. Every error is a 4xx JSON body "
        '`{"error", "field"}` naming the field and the limit.\n\nTry it in a browser: '
        "[the playground](./playground/), a page over this API. The loaded models and "
        "their cards: [/models](./models). Prometheus metrics: [/metrics](./metrics). "
        "This spec: [/docs.json](./docs.json). The HTTP contract, the model card "
        "schema and the architecture are in the repository's `docs/` (http-api.md, "
        "model-card.md, architecture.md)."),
    "license": {"name": "MIT"},
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "COUNTERFEIT_API_KEY, when the operator set one"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "COUNTERFEIT_API_KEY, when the operator set one"},
}
TAG_DESCRIPTIONS = {
    "Service APIs": "Sample, interpolate, score, invert, inpaint, run batch jobs, list the "
                    "models.",
    "Infrastructure": "Health checks and Prometheus metrics.",
}
PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Counterfeit API</title>
  <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css">
  <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script src="./static_content/swagger-initializer.js" charset="UTF-8"></script>
</body>
</html>
"""


def _with_examples(schema: dict[str, Any]) -> None:
    """pydantic writes `examples` (a list, OpenAPI 3.1); Swagger UI on a 3.0 spec builds
    its example body from `example`."""
    for prop in schema.get("properties", {}).values():
        if "examples" in prop and "example" not in prop:
            prop["example"] = prop["examples"][0]


def patch_spec(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec["info"] = INFO
    for tag in spec.get("tags", []):  # BentoML's words for its two groups
        tag["description"] = TAG_DESCRIPTIONS.get(tag["name"], tag.get("description", ""))
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for schema in schemas.values():
        _with_examples(schema)
    # with COUNTERFEIT_API_KEY set every route but the health checks needs the key: Swagger
    # UI's "Authorize" sends it (optional in the spec, since the key itself is optional)
    spec["components"]["securitySchemes"] = SECURITY_SCHEMES
    spec["security"] = [{}, *({name: []} for name in SECURITY_SCHEMES)]
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    paths = spec.get("paths", {})
    for route in OWN_ROUTES:
        operation = paths.get(route, {}).get("post")
        if operation is None:
            continue
        for content in operation.get("requestBody", {}).get("content", {}).values():
            _with_examples(content.get("schema", {}))
        responses = operation.setdefault("responses", {})
        for status, description in ERROR_STATUSES.items():
            responses[status] = {"description": description, **error}
        if route in IMAGE_ROUTES:
            content = {"image/png": BINARY, "application/octet-stream": BINARY}
            if route == "/invert":
                content = {"application/json": {"schema": {"type": "object"}}, **content}
            responses["200"] = {"description": IMAGE_ROUTES[route], "content": content}
    submit = paths.get("/jobs/submit", {}).get("post")
    if submit is not None:  # a job is accepted, not done
        submit["responses"]["202"] = {**submit["responses"].pop("200"),
                                      "description": "Accepted: the job's status"}
    models = paths.get("/models", {}).get("post")
    if models is not None:
        get = {k: v for k, v in models.items() if k != "requestBody"}
        paths["/models"]["get"] = {**get, "operationId": f"{get.get('operationId')}_get"}
    return spec


class ApiDocs:
    """ASGI middleware: GET / answers PAGE; GET /docs.json is rewritten by patch_spec."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path == "/" and scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(PAGE)).encode())]})
            await send({"type": "http.response.body", "body": PAGE})
            return
        if path != "/docs.json":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {"start": None, "body": b""}

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                held["start"] = message
                return
            held["body"] += message.get("body", b"")
            if message.get("more_body"):
                return
            body = held["body"]
            if held["start"]["status"] == 200:
                body = json.dumps(patch_spec(json.loads(body))).encode()
            headers = [(k, v) for k, v in held["start"].get("headers", [])
                       if k != b"content-length"]
            await send({**held["start"], "headers": headers + [
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)
