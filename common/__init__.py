"""Generic helpers below every package: files written whole, hashes, signal handling, the ranges of command-line numbers."""
