"""Benchmarks that write JSON and compare against a reference measured in the same run."""
