"""Serving SoM models: an OpenAI-compatible server, a terminal chat and a web demo."""
