"""The attack protocol, blind line-ups and reports."""
