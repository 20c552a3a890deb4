"""Networks. A model file holds the model; losses and the training loop live elsewhere."""
