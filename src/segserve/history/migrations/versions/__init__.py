"""The revisions, oldest first: 0001 the tables, 0002 their indexes."""
