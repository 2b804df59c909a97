"""Model, dense-CRF loss, training loop and evaluation. May import `pipeline`; never the reverse."""
