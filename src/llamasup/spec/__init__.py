"""Sidecar identity: ``SidecarSpec``, its key, the ``Resolver`` and the child environment."""
