"""What ``llamasup bench`` and ``llamasup eval`` share: targets and their ad-hoc variants,
sessions that make a variant's sidecar ready (a supervisor of their own, or a running
llamasup), the identity of what was measured, and the resumable JSON-lines result log."""
