"""openimages."""
