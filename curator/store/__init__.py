"""The store: one LanceDB database folder (or object-store URI). `store` holds the verbs
(open, append, upsert, overwrite, read, versions, tag), `sql` the DuckDB views and queries over its
tables, `vectors` the fast zero-copy reads of embedding vectors.
"""
