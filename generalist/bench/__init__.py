"""Benchmarks (`generalist bench NAME`): each module has main(argv) and prints one JSON line."""
