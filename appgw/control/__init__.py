"""The process: runtime, workers, listeners, probes, health, stats, logs, the admin endpoint."""
