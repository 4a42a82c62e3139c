"""Benchmarks: figures printed beside a baseline; they assert nothing about time."""
