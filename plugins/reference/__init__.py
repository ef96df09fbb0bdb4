"""Readable, slow versions of the built-in layers: loops over every sample,
channel and pixel, in float64, written to be obviously right.  Read them to
see what a layer computes; the tests hold the fast layers to them."""
