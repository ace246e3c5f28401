"""Small helpers shared across keras_encdec."""
