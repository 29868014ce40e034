"""Judges: who answers "which of these two essays is better?" (spec §10)."""
