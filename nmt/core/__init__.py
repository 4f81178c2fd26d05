"""The base layer: errors, atomic I/O, device and precision, the settings checker, paths."""
