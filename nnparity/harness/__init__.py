"""The harness: planning, worker processes, timing, environment capture, results."""
