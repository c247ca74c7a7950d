"""Training: one recipe (`recipe.train`) for every method."""
