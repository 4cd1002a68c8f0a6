"""Matrix multiplication C = A @ B in row panels, and matrix-vector multiplication."""
