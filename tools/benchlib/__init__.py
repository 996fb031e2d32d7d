"""Parts of tools/bench: what it measures (probes) and how it checks a destination (verify)."""
