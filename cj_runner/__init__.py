"""cj-runner: Comparative Judgement of student essays with an LLM as the judge."""

__version__ = "0.1.0"

__all__ = ["__version__"]
