"""The files the built-in data sets come in: downloading them from mirrors,
reading their formats (gzip, IDX, Keras-layout ``.npz``, the classic MNIST
pickle), and the MNIST sample shipped with Laminae.  Helpers, not plugins:
no hooks here."""
