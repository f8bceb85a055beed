"""The running llamasup: composition, serve, watch, auth, browser gate, metrics, control API."""
