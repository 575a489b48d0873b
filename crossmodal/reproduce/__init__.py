"""Reproductions of the two papers' tables on the shared public data (resumable, Markdown + JSON)."""
