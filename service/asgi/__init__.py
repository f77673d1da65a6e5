"""ASGI pieces in front of the routes: access control, the body guard, the OpenAPI page,
BentoML fixes."""
