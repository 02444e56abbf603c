"""Grouping: representation, assignment, team rules, corrections."""
