"""The fan-out benchmark: the real stack on loopback against two baselines (run ``python -m bench``)."""
