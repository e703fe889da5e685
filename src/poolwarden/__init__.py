"""poolwarden: keep every pool between the app, PgBouncer and PostgreSQL inside the budget."""

__version__ = "0.1.0"
