"""The theory views' maths (seed 002's score and ELBO, seed 003's targets, seed 004's FID)."""
