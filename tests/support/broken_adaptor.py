"""A module that fails while being imported, for the loader's error messages."""

raise RuntimeError("this adaptor module is broken on purpose")
