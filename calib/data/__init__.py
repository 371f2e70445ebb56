"""Storage: the DuckDB schema and migrations, imports and exports, population cells, the demo data. Imports nothing above it."""
