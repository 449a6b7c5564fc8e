"""Reporting: tables as pure functions of run histories (no torch), figures, Markdown."""
