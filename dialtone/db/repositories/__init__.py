"""All SQL lives here. Repositories flush, never commit."""
