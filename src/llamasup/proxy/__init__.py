"""The OpenAI/Anthropic front: ASGI app, request, body, limits, relay, upstream, envelopes."""
