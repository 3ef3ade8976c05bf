"""The OpenAI-compatible HTTP server: ``create_app(engine)`` (engine.server.app) serves an LLMEngine."""
