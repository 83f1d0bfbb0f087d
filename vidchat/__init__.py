"""vidchat: ask questions about videos through a vLLM OpenAI-compatible server."""

__version__ = "0.1.0"
