"""Data in, checked: readers, importers, manifests, checksums, splits and the phantom generator."""
