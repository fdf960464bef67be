"""tdbnas.search: the weight-sharing supernet, BN recalibration and latency-constrained
evolutionary search (the search issue)."""
