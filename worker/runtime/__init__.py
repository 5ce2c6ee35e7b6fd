"""Model runtime: weights, preprocessing, backends. Imports torch; worker processes only."""
