"""The built-in ``postgresql`` provider (psycopg 3): roles, databases, schemas, grants."""
