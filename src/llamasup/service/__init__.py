"""The running llamasup: composition, serve, watch, auth, browser gate, metrics, control API."""

from llamasup.service import uvicorn_package

# before any module of this package imports uvicorn: its server, not its command line
uvicorn_package.defer_init()
