"""What each pipeline stage does, over the library: stages/ only parse arguments and call these."""
