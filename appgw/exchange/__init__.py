"""One request's exchange and the rules it runs: rewrite sets, error pages, compression."""
