"""``llamasup bench``: throughput of targets and load-time flag variants on this host,
measured through the supervisor that serves production traffic (see ``runner``)."""
