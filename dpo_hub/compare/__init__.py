"""Base vs tuned on the same pairs: log-prob scoring, the report (table, JSON, figure) and side-by-side
answers."""
