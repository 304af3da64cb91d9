"""Providers: resource types with read / plan / apply, and the registry that finds them."""
