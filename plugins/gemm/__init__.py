"""Matrix-product helpers for the ``conv`` layer: cutting skinny products into
stacked pieces (skinny), and letting the product add the bias
(bias_column).  Helpers, not plugins: no hooks here."""
