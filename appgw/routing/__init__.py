"""Routing compiled at load: listeners by Host, paths to targets, the serving snapshot."""
