"""The HTTP edge: thin controllers, one service call each."""
