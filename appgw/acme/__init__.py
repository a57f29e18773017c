"""Automatic certificates from an ACME CA: client, schedule, storage, challenges, reports."""
