"""ASGI pieces in front of the routes: the body guard, the OpenAPI page, BentoML fixes."""
