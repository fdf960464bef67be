"""tdbnas.latency: operator profiling on devices, the latency lookup table, predictors and
device profiles (the latency issue)."""
